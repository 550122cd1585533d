"""pods/log and pods/exec: which container a request is for, and where its kubelet listens."""
import pytest
from kubeweft.lab import errors
from kubeweft.lab.apiserver.streams import kubelet_address, pick_container

POD = {"metadata": {"name": "web"}, "spec": {"containers": [{"name": "app"}, {"name": "side"}],
                                             "initContainers": [{"name": "init"}]}}


def test_the_container_is_named_or_the_only_one():
    assert pick_container(POD, "side") == "side" and pick_container(POD, "init") == "init"
    assert pick_container({"metadata": {"name": "x"}, "spec": {"containers": [{"name": "only"}]}}, None) == "only"
    with pytest.raises(errors.APIError) as e:
        pick_container(POD, None)
    assert e.value.code == 400 and str(e.value.status()["message"]) == \
        "a container name must be specified for pod web, choose one of: [app side init]"
    with pytest.raises(errors.APIError) as e:
        pick_container(POD, "nope")
    assert e.value.status()["message"] == "container nope is not valid for pod web"


def test_kubelet_address_from_the_node():
    node = {"metadata": {"name": "node1"},
            "status": {"addresses": [{"type": "Hostname", "address": "node1"},
                                     {"type": "InternalIP", "address": "192.168.56.11"}],
                       "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}}
    assert kubelet_address(node) == ("192.168.56.11", 10250)
    with pytest.raises(errors.APIError):
        kubelet_address({"metadata": {"name": "n"}, "status": {}})
