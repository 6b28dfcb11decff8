"""The service registry: Kubernetes Services and ServiceEntries as one list of hosts.

Translation works on :class:`MeshService` (a hostname with ports) and
:class:`Instance` (one endpoint of one port, with the labels subsets select on), as
istiod's service registry does. Kubernetes endpoint labels come from the EndpointSlice's
own labels and, when the config holds it, the Pod its ``targetRef`` names; WorkloadEntries
join the Services whose selector matches them and the ServiceEntries whose
``workloadSelector`` does.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from envoy.config.core.v3 import health_check_pb2

from ..objects._istio_mesh import ServiceEntry, WorkloadEntry
from ..objects._kubernetes import EndpointSlice, MeshObjects, Pod, Service, ServicePort

__all__ = [
    "TLS_MODE_LABEL",
    "Instance",
    "MeshService",
    "Registry",
    "ServicePortInfo",
    "spiffe_id",
]

log = logging.getLogger(__name__)

TLS_MODE_LABEL = "security.istio.io/tlsMode"
_REGION = "topology.kubernetes.io/region"
_ZONE = "topology.kubernetes.io/zone"
_SUBZONE = "topology.istio.io/subzone"
_DOMAIN = "svc.cluster.local"


def spiffe_id(namespace: str, service_account: str) -> str:
    """``spiffe://cluster.local/ns/<ns>/sa/<sa>``, the identity Istio issues a workload."""
    return f"spiffe://cluster.local/ns/{namespace}/sa/{service_account}"


@dataclass(frozen=True)
class Instance:
    """One endpoint address:port serving one service port."""

    address: str
    port: int
    labels: Mapping[str, str] = field(default_factory=dict)
    locality: tuple[str, str, str] = ("", "", "")
    health: int = health_check_pb2.HEALTHY
    weight: int = 1
    service_account: str = ""  # a SPIFFE ID, or "" if unknown

    @property
    def tls_mode(self) -> str:
        """``istio`` when the workload terminates Istio mTLS, else ``disabled``."""
        return self.labels.get(TLS_MODE_LABEL, "disabled")


@dataclass(frozen=True)
class ServicePortInfo:
    """A port of a :class:`MeshService`."""

    number: int
    name: str = ""
    protocol: str = "HTTP"


@dataclass(frozen=True)
class MeshService:
    """A host the mesh routes to: a Kubernetes Service or one ServiceEntry host."""

    hostname: str
    namespace: str
    ports: tuple[ServicePortInfo, ...]
    instances: Mapping[int, tuple[Instance, ...]] = field(default_factory=dict)
    short_name: str | None = None  # Kubernetes Services: dialable as name, name.ns, ...
    addresses: tuple[str, ...] = ()
    resolution: str = "EDS"  # EDS | STATIC | DNS | DNS_ROUND_ROBIN | NONE
    selector: Mapping[str, str] | None = None

    def port(self, number: int) -> ServicePortInfo | None:
        """The port numbered ``number``, if the service has it."""
        return next((p for p in self.ports if p.number == number), None)

    def aliases(self) -> list[str]:
        """Every name a client may dial, the FQDN first."""
        if self.short_name is None:
            return [self.hostname]
        base = f"{self.short_name}.{self.namespace}"
        return [self.hostname, f"{base}.svc", base, self.short_name]


def _labels_locality(labels: Mapping[str, str], zone: str | None) -> tuple[str, str, str]:
    return (labels.get(_REGION, ""), zone or labels.get(_ZONE, ""), labels.get(_SUBZONE, ""))


def _split_locality(text: str) -> tuple[str, str, str]:
    parts = [*text.split("/"), "", "", ""][:3]
    return (parts[0], parts[1], parts[2])


def _matches(selector: Mapping[str, str] | None, labels: Mapping[str, str]) -> bool:
    return selector is not None and all(labels.get(k) == v for k, v in selector.items())


@lru_cache(maxsize=256)
def _resolve(host: str) -> tuple[str, ...]:
    try:
        ipaddress.ip_address(host)
        return (host,)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as err:
        log.warning("cannot resolve %s: %s", host, err)
        return ()
    return tuple(sorted({str(i[4][0]) for i in infos}))


class Registry:
    """Every :class:`MeshService`, with lookups by the names clients and configs use."""

    def __init__(self, objects: MeshObjects) -> None:
        self.objects = objects
        self._pods = {(p.namespace, p.name): p for p in objects.pods}
        services: dict[str, MeshService] = {}
        for svc in objects.services:
            services[f"{svc.name}.{svc.namespace}.{_DOMAIN}"] = self._kubernetes(svc)
        for entry in objects.service_entries:
            for ms in self._service_entry(entry):
                services.setdefault(ms.hostname, ms)
        self.services: dict[str, MeshService] = dict(sorted(services.items()))

    def lookup(self, host: str, namespace: str) -> MeshService | None:
        """The service ``host`` names, as written in an object of ``namespace``."""
        host = host.lower().rstrip(".")
        found = self.services.get(host)
        if found is not None:
            return found
        parts = host.split(".")
        if len(parts) == 1:
            return self.services.get(f"{host}.{namespace}.{_DOMAIN}")
        if len(parts) == 2 or (len(parts) == 3 and parts[2] == "svc"):
            return self.services.get(f"{parts[0]}.{parts[1]}.{_DOMAIN}")
        return None

    def resolve_dns(self, host: str) -> tuple[str, ...]:
        """IP addresses of ``host`` (cached), for clients that need them resolved."""
        return _resolve(host)

    # -- Kubernetes ------------------------------------------------------------------
    def _kubernetes(self, svc: Service) -> MeshService:
        ports = tuple(
            ServicePortInfo(p.port, p.name, _protocol(p.name, p.app_protocol, p.protocol))
            for p in svc.ports
            if p.protocol == "TCP"
        )
        slices = self.objects.slices_for(svc)
        instances: dict[int, tuple[Instance, ...]] = {}
        for sp in svc.ports:
            if sp.protocol != "TCP":
                continue
            found = list(self._slice_instances(svc, sp, slices))
            for we in self.objects.workload_entries:
                if (
                    we.namespace == svc.namespace
                    and svc.selector
                    and _matches(svc.selector, we.labels)
                ):
                    port = we.ports.get(sp.name) or _target(sp) or sp.port
                    found.append(_workload_instance(we, port))
            instances[sp.port] = _dedupe(found)
        return MeshService(
            hostname=f"{svc.name}.{svc.namespace}.{_DOMAIN}",
            namespace=svc.namespace,
            ports=ports,
            instances=instances,
            short_name=svc.name,
            addresses=(svc.cluster_ip,) if svc.cluster_ip and svc.cluster_ip != "None" else (),
            selector=dict(svc.selector),
        )

    def _slice_instances(
        self, svc: Service, sp: ServicePort, slices: Iterable[EndpointSlice]
    ) -> Iterable[Instance]:
        for eps in slices:
            if eps.address_type == "FQDN":
                continue
            port = _slice_port(sp, len(svc.ports), eps)
            if port is None:
                continue
            for ep in eps.endpoints:
                cond = ep.conditions
                if cond.is_ready:
                    health = health_check_pb2.HEALTHY
                elif cond.terminating and cond.serving is not False:
                    health = health_check_pb2.DRAINING
                else:
                    continue
                labels = {k: v for k, v in eps.labels.items() if "kubernetes.io/" not in k}
                account = ""
                ref = ep.target_ref
                pod: Pod | None = None
                if ref is not None and ref.kind == "Pod":
                    pod = self._pods.get((ref.namespace or eps.namespace, ref.name))
                if pod is not None:
                    labels.update(pod.labels)
                    account = spiffe_id(pod.namespace, pod.service_account)
                for address in ep.addresses:
                    yield Instance(
                        address=address,
                        port=port,
                        labels=labels,
                        locality=_labels_locality(labels, ep.zone),
                        health=health,
                        service_account=account,
                    )

    # -- ServiceEntry ----------------------------------------------------------------
    def _service_entry(self, entry: ServiceEntry) -> list[MeshService]:
        ports = tuple(ServicePortInfo(p.number, p.name, p.protocol) for p in entry.ports)
        workloads: list[WorkloadEntry] = list(entry.endpoints)
        if entry.workload_selector is not None:
            workloads += [
                we
                for we in self.objects.workload_entries
                if we.namespace == entry.namespace and _matches(entry.workload_selector, we.labels)
            ]
        out = []
        for host in entry.hosts:
            instances: dict[int, tuple[Instance, ...]] = {}
            for p in entry.ports:
                found = [
                    _workload_instance(w, w.ports.get(p.name) or p.target_port or p.number)
                    for w in workloads
                ]
                if not workloads and entry.resolution in ("DNS", "DNS_ROUND_ROBIN"):
                    found = [Instance(address=host, port=p.target_port or p.number)]
                instances[p.number] = _dedupe(found)
            out.append(
                MeshService(
                    hostname=host.lower(),
                    namespace=entry.namespace,
                    ports=ports,
                    instances=instances,
                    addresses=entry.addresses,
                    resolution=entry.resolution,
                )
            )
        return out


def _protocol(name: str, app_protocol: str | None, transport: str) -> str:
    proto = (app_protocol or name.split("-", 1)[0]).lower()
    if proto in ("grpc", "grpc-web", "http2", "h2c", "kubernetes.io/h2c"):
        return "GRPC" if proto.startswith("grpc") else "HTTP2"
    if proto in ("tcp", "mongo", "redis", "mysql"):
        return "TCP"
    return "HTTP"


def _target(sp: ServicePort) -> int | None:
    return sp.target_port if isinstance(sp.target_port, int) else None


def _workload_instance(we: WorkloadEntry, port: int) -> Instance:
    return Instance(
        address=we.address,
        port=port,
        labels=dict(we.labels),
        locality=_split_locality(we.locality),
        weight=we.weight,
        service_account=spiffe_id(we.namespace, we.service_account),
    )


def _dedupe(found: Iterable[Instance]) -> tuple[Instance, ...]:
    seen: dict[tuple[str, int], Instance] = {}
    for inst in found:
        seen.setdefault((inst.address, inst.port), inst)
    return tuple(seen.values())


def _slice_port(svc_port: ServicePort, n_service_ports: int, eps: EndpointSlice) -> int | None:
    for p in eps.ports:
        if p.name == svc_port.name and p.port is not None:
            return p.port
    if not svc_port.name:
        if len(eps.ports) == 1 and n_service_ports == 1 and eps.ports[0].port is not None:
            return eps.ports[0].port
        if isinstance(svc_port.target_port, int):
            return svc_port.target_port
        if svc_port.target_port is None and not eps.ports:
            return svc_port.port
    return None
