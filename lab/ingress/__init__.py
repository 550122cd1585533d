"""The lab's Ingress controller: real nginx configured from Ingress objects, as ingress-nginx.

    views       frozen views of Ingresses, IngressClasses, Services, EndpointSlices and Secrets
    classes     which Ingresses belong to this controller's IngressClass
    render      views -> nginx.conf and certificate files (pure)
    nginx       the nginx child process: test, start, reload, stop
    controller  informers, writes the configuration atomically, reloads, Ingress status
    __main__    `python -m kubeweft.lab.ingress`, with ingress-nginx's flags where they apply
"""
