"""The lab kubelet: `python -m kubeweft.lab.kubelet --lab NAME --node NODE`, inside the node's netns."""
