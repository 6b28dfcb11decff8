"""Which VirtualService and DestinationRule apply to each service, and cluster naming.

:class:`RuleIndex` resolves the hosts written in Istio objects (short names are
relative to the object's namespace, as in Istio) against the :class:`Registry`, and
knows every cluster translation creates, so routes only name clusters that exist.
Problems found while resolving (an unknown host or subset) are collected for the
control plane to report; the affected destination is left out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from ..objects._istio_networking import VirtualService
from ..objects._istio_policy import DestinationRule, Subset, TrafficPolicy, effective_policy
from ._registry import Instance, MeshService, Registry

__all__ = ["RuleIndex", "cluster_name", "subset_instances"]

log = logging.getLogger(__name__)


def cluster_name(port: int, fqdn: str, subset: str = "") -> str:
    """istiod's ``outbound|<port>|<subset>|<fqdn>``; also the route configuration name."""
    return f"outbound|{port}|{subset}|{fqdn}"


def subset_instances(service: MeshService, port: int, subset: Subset | None) -> list[Instance]:
    """The instances of ``service`` at ``port`` that carry the subset's labels."""
    found = service.instances.get(port, ())
    if subset is None:
        return list(found)
    return [i for i in found if all(i.labels.get(k) == v for k, v in subset.labels.items())]


class RuleIndex:
    """VirtualServices and DestinationRules by the service hostname they apply to."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.problems: list[str] = []
        objects = registry.objects
        self._vs: dict[str, list[VirtualService]] = {}
        for vs in objects.virtual_services:
            if not vs.applies_to_mesh:
                continue
            for i, host in enumerate(vs.hosts):
                svc = registry.lookup(host, vs.namespace)
                if svc is None:
                    self.problem(vs, f"spec.hosts[{i}]", f"no Service or ServiceEntry {host!r}")
                    continue
                self._vs.setdefault(svc.hostname, []).append(vs)
        self._dr: dict[str, DestinationRule] = {}
        for dr in objects.destination_rules:
            svc = registry.lookup(dr.host, dr.namespace)
            if svc is None:
                self.problem(dr, "spec.host", f"no Service or ServiceEntry {dr.host!r}")
                continue
            current = self._dr.get(svc.hostname)
            # Like istiod: a rule in the service's own namespace wins over others.
            if current is None or (
                current.namespace != svc.namespace and dr.namespace == svc.namespace
            ):
                self._dr[svc.hostname] = dr

    def problem(self, obj: VirtualService | DestinationRule, path: str, message: str) -> None:
        """Record a problem with ``obj`` at field ``path``."""
        kind = type(obj).__name__
        text = f"{kind} {obj.namespace}/{obj.name}: {path}: {message}"
        if text not in self.problems:
            log.warning("%s", text)
            self.problems.append(text)

    def virtual_services(self, service: MeshService) -> list[VirtualService]:
        """VirtualServices for ``service``: those in its namespace first, then by name."""
        found = self._vs.get(service.hostname, [])
        return sorted(found, key=lambda v: (v.namespace != service.namespace, v.namespace, v.name))

    def destination_rule(self, service: MeshService) -> DestinationRule | None:
        """The DestinationRule for ``service``, if any."""
        return self._dr.get(service.hostname)

    def subsets(self, service: MeshService) -> tuple[Subset, ...]:
        """The DestinationRule's subsets for ``service``."""
        dr = self._dr.get(service.hostname)
        return dr.subsets if dr is not None else ()

    def policy(self, service: MeshService, port: int, subset: str = "") -> TrafficPolicy:
        """The effective traffic policy of cluster ``outbound|port|subset|host``."""
        dr = self._dr.get(service.hostname)
        if dr is None:
            return TrafficPolicy()
        sub = next((s for s in dr.subsets if s.name == subset), None)
        return effective_policy(dr.traffic_policy, sub.traffic_policy if sub else None, port)

    def clusters(self) -> Iterator[tuple[MeshService, int, Subset | None]]:
        """Every (service, port, subset) that gets a cluster."""
        for svc in self.registry.services.values():
            for port in svc.ports:
                yield svc, port.number, None
                for subset in self.subsets(svc):
                    yield svc, port.number, subset

    def has_cluster(self, service: MeshService, port: int, subset: str) -> bool:
        """True when translation creates ``outbound|port|subset|host``."""
        if service.port(port) is None:
            return False
        return not subset or any(s.name == subset for s in self.subsets(service))
