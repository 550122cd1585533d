"""The lab's cluster DNS, in CoreDNS's place: Services, EndpointSlices and Pods watched through the
API, answered as the Kubernetes DNS-Based Service Discovery specification says.

    views.py     the API objects as frozen values (the watch edge)
    index.py     the in-memory index, updated per watch event
    records.py   the answer to one question (pure)
    server.py    UDP and TCP sockets, truncation, metrics per query
    metrics.py   CoreDNS-named Prometheus metrics
    status.py    /metrics, /health, /ready over HTTP
    watcher.py   the informers feeding the index
    corefile.py  the Corefile subset read at start
    __main__.py  `python -m kubeweft.lab.dns`: flags, start, stop
"""
