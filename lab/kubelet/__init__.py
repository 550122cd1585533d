"""The lab kubelet: `python -m lab.kubelet --lab NAME --node NODE`, inside the node's netns."""
