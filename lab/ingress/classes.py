"""Which Ingresses this controller serves, as ingress-nginx decides (store.GetIngressClass). Pure.

- spec.ingressClassName names an IngressClass whose spec.controller is ours (k8s.io/ingress-nginx);
- else the deprecated kubernetes.io/ingress.class annotation equals our --ingress-class;
- else (no class at all) with --watch-ingress-without-class, or when our IngressClass carries
  ingressclass.kubernetes.io/is-default-class: "true" (the API server gives new class-less
  Ingresses that class; older ones are served too).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from .views import IngressClassView, IngressView


def is_ours(ing: IngressView, classes: Mapping[str, IngressClassView], class_name: str, controller: str,
            watch_without_class: bool = False) -> bool:
    if ing.class_name is not None:
        ic = classes.get(ing.class_name)
        return ic is not None and ic.controller == controller
    if ing.class_annotation is not None:
        return ing.class_annotation == class_name
    own = classes.get(class_name)
    return watch_without_class or (own is not None and own.controller == controller and own.is_default)


def select_ingresses(ingresses: Iterable[IngressView], classes: Mapping[str, IngressClassView], class_name: str,
                     controller: str, watch_without_class: bool = False) -> list[IngressView]:
    return [i for i in ingresses if is_ours(i, classes, class_name, controller, watch_without_class)]
