"""Cross-node pod routing, driven by Node objects, in flannel's shape: a backend interface
(backend.py) with VXLAN (vxlan.py) and host-gw (hostgw.py) beside it, the pure plan and diff
(plan.py), the netlink side (kernel.py) and the controller that watches Nodes (controller.py).
Only controller.py needs the Kubernetes client."""
