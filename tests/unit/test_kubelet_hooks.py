"""Lifecycle hooks: how postStart and preStop read, the preStop budget, and a sleep hook run."""
import threading
import time

from kubeweft.lab.kubelet import hooks, podspec


def container(lifecycle: dict) -> podspec.Container:
    return podspec.parse_container({"name": "app", "ports": [{"containerPort": 8080, "name": "web"}],
                                    "lifecycle": lifecycle})


def test_pre_stop_sleep_exec_and_http_parse():
    assert container({"preStop": {"sleep": {"seconds": 5}}}).pre_stop == podspec.Handler("sleep", seconds=5)
    c = container({"preStop": {"exec": {"command": ["sh", "-c", "nginx -s quit"]}},
                   "postStart": {"httpGet": {"path": "/warm", "port": "web", "host": "10.0.0.9",
                                             "httpHeaders": [{"name": "X-A", "value": 1}]}}})
    assert c.pre_stop == podspec.Handler("exec", command=("sh", "-c", "nginx -s quit"))
    assert c.post_start == podspec.Handler("http", port=8080, path="/warm", host="10.0.0.9",
                                           headers=(("X-A", "1"),))


def test_hooks_that_name_nothing_runnable_are_dropped():
    assert container({}).pre_stop is None and container({}).post_start is None
    assert container({"preStop": {"exec": {"command": []}}}).pre_stop is None
    assert container({"preStop": {"httpGet": {"port": "nope"}}}).pre_stop is None
    assert container({"preStop": {"tcpSocket": {"port": 80}}}).pre_stop is None     # deprecated, not run
    assert container({"postStart": {"sleep": {"seconds": -3}}}).post_start == podspec.Handler("sleep", seconds=0)


def test_pre_stop_time_comes_off_the_grace_period_with_a_two_second_floor():
    assert hooks.plan_term_grace(30, 2.0) == 28.0
    assert hooks.plan_term_grace(10, 9.5) == 2.0         # what the kubelet still gives SIGTERM
    assert hooks.plan_term_grace(3, 3.0) == 2.0          # a hook cut off at the grace period
    assert hooks.hook_timeout(3) == 3.0 and hooks.hook_timeout(-1) == 0.0


def test_a_sleep_hook_is_cut_off_at_its_timeout():
    t0 = time.monotonic()
    assert hooks.run(podspec.Handler("sleep", seconds=30), "", 0, {}, 0.3) == (True, "")
    assert time.monotonic() - t0 < 1.0
    cancel = threading.Event()
    cancel.set()
    assert hooks.run(podspec.Handler("sleep", seconds=30), "", 0, {}, 5, cancel)[0] is False


def test_run_all_reports_each_container_and_a_failed_http_hook():
    jobs = [("a", podspec.Handler("sleep", seconds=0), 0, {}),
            ("b", podspec.Handler("http", port=1, path="/"), 0, {})]
    results = hooks.run_all(jobs, "127.0.0.1", 2.0)
    assert results["a"][0] is True
    ok, why, took = results["b"]
    assert ok is False and "127.0.0.1:1" in why and took < 2.0
