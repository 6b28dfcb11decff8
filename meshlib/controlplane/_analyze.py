"""``meshlib analyze``: references in a configuration that resolve to nothing.

As ``istioctl analyze`` does for a cluster: a VirtualService or DestinationRule host no
Service or ServiceEntry has, a destination subset no DestinationRule defines, a subset no
endpoint carries, and what valid objects ask for that meshlib cannot serve.
"""

from __future__ import annotations

from .objects._kubernetes import MeshObjects
from .translate._registry import Registry
from .translate._rules import RuleIndex, subset_instances
from .translate._translate import translate

__all__ = ["analyze"]


def analyze(objects: MeshObjects) -> list[str]:
    """Every finding, one line each, naming the object and the field."""
    found = list(translate(objects).problems)
    index = RuleIndex(Registry(objects))
    for dr in objects.destination_rules:
        svc = index.registry.lookup(dr.host, dr.namespace)
        if svc is None or index.destination_rule(svc) is not dr:
            continue
        for i, subset in enumerate(dr.subsets):
            if not any(subset_instances(svc, p.number, subset) for p in svc.ports):
                labels = ", ".join(f"{k}={v}" for k, v in sorted(subset.labels.items()))
                found.append(
                    f"DestinationRule {dr.namespace}/{dr.name}: spec.subsets[{i}]: no endpoint "
                    f"of {svc.hostname} carries the labels of subset {subset.name!r} ({labels})"
                )
    return list(dict.fromkeys(found))
