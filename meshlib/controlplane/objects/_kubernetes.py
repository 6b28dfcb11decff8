"""Typed, validated models of the Kubernetes objects the control plane reads.

Each ``parse_*`` function takes one decoded JSON/YAML document and returns a frozen
model, or raises :class:`ConfigError` naming the field path that is wrong. Field names
follow the Kubernetes API (``spec.ports[0].targetPort``), so messages point at the
line a user would edit.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._fields import DNS_LABEL as _DNS_LABEL
from ._fields import ConfigError, object_id
from ._fields import FieldError as _FieldError
from ._fields import as_bool as _bool
from ._fields import as_labels as _labels
from ._fields import as_list as _list
from ._fields import as_mapping as _mapping
from ._fields import as_port as _port
from ._fields import as_str as _str
from ._fields import metadata as _metadata
from ._fields import wrap as _wrap
from ._istio_authn import RequestAuthentication
from ._istio_mesh import (
    AuthorizationPolicy,
    PeerAuthentication,
    ServiceEntry,
    Sidecar,
    WorkloadEntry,
)
from ._istio_networking import VirtualService
from ._istio_policy import DestinationRule

__all__ = [
    "SERVICE_NAME_LABEL",
    "ConfigError",
    "Endpoint",
    "EndpointConditions",
    "EndpointPort",
    "EndpointSlice",
    "MeshObjects",
    "ObjectRef",
    "Pod",
    "Service",
    "ServicePort",
    "object_id",
    "parse_endpoint_slice",
    "parse_endpoints",
    "parse_pod",
    "parse_service",
]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
_PROTOCOLS = ("TCP", "UDP", "SCTP")
_ADDRESS_TYPES = ("IPv4", "IPv6", "FQDN")


@dataclass(frozen=True)
class ServicePort:
    """One entry of ``Service.spec.ports``."""

    port: int
    name: str = ""
    target_port: int | str | None = None
    protocol: str = "TCP"
    app_protocol: str | None = None


@dataclass(frozen=True)
class Service:
    """A Kubernetes ``v1/Service``."""

    name: str
    namespace: str = "default"
    ports: tuple[ServicePort, ...] = ()
    cluster_ip: str | None = None
    selector: Mapping[str, str] = field(default_factory=dict)

    @property
    def fqdn(self) -> str:
        """``<name>.<namespace>.svc.cluster.local``."""
        return f"{self.name}.{self.namespace}.svc.cluster.local"


@dataclass(frozen=True)
class EndpointConditions:
    """``endpoints[].conditions``; ``None`` means the field was absent."""

    ready: bool | None = None
    serving: bool | None = None
    terminating: bool | None = None

    @property
    def is_ready(self) -> bool:
        """Kubernetes semantics: absent ``ready`` means ready unless terminating."""
        if self.ready is not None:
            return self.ready
        return not self.terminating


@dataclass(frozen=True)
class ObjectRef:
    """``endpoints[].targetRef``."""

    kind: str = ""
    name: str = ""
    namespace: str = ""


@dataclass(frozen=True)
class Endpoint:
    """One entry of ``EndpointSlice.endpoints``."""

    addresses: tuple[str, ...]
    conditions: EndpointConditions = EndpointConditions()
    node_name: str | None = None
    zone: str | None = None
    target_ref: ObjectRef | None = None


@dataclass(frozen=True)
class EndpointPort:
    """One entry of ``EndpointSlice.ports``; ``port`` None means "all ports"."""

    port: int | None
    name: str = ""
    protocol: str = "TCP"


@dataclass(frozen=True)
class EndpointSlice:
    """A Kubernetes ``discovery.k8s.io/v1/EndpointSlice``."""

    name: str
    namespace: str
    service_name: str | None
    address_type: str
    endpoints: tuple[Endpoint, ...] = ()
    ports: tuple[EndpointPort, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Pod:
    """The parts of a ``v1/Pod`` the mesh uses: labels (for subsets) and service account."""

    name: str
    namespace: str = "default"
    labels: Mapping[str, str] = field(default_factory=dict)
    service_account: str = "default"


@dataclass(frozen=True)
class MeshObjects:
    """Everything a source read, ready for translation."""

    services: tuple[Service, ...] = ()
    endpoint_slices: tuple[EndpointSlice, ...] = ()
    pods: tuple[Pod, ...] = ()
    virtual_services: tuple[VirtualService, ...] = ()
    destination_rules: tuple[DestinationRule, ...] = ()
    service_entries: tuple[ServiceEntry, ...] = ()
    workload_entries: tuple[WorkloadEntry, ...] = ()
    peer_authentications: tuple[PeerAuthentication, ...] = ()
    authorization_policies: tuple[AuthorizationPolicy, ...] = ()
    request_authentications: tuple[RequestAuthentication, ...] = ()
    sidecars: tuple[Sidecar, ...] = ()

    def slices_for(self, service: Service) -> tuple[EndpointSlice, ...]:
        """EndpointSlices labelled for ``service`` in its namespace."""
        return tuple(
            s
            for s in self.endpoint_slices
            if s.namespace == service.namespace and s.service_name == service.name
        )


def _protocol(value: Any, path: str) -> str:
    proto = _str(value, path) or "TCP"
    if proto not in _PROTOCOLS:
        raise _FieldError(path, f"must be one of {', '.join(_PROTOCOLS)}")
    return proto


def parse_service(doc: Mapping[str, Any]) -> Service:
    """Validate one ``kind: Service`` document."""
    try:
        name, namespace, _ = _metadata(doc)
        if len(name) > 63 or not _DNS_LABEL.match(name):
            raise _FieldError("metadata.name", f"{name!r} is not a valid DNS label")
        spec = _mapping(doc.get("spec"), "spec", required=True)
        # Settings that change where a mesh client's calls go, which meshlib does not
        # implement: refused by name rather than dropped (issue 15).
        for key, value in (
            ("type", "ExternalName"),
            ("sessionAffinity", "ClientIP"),
            ("publishNotReadyAddresses", True),
            ("internalTrafficPolicy", "Local"),
        ):
            if spec.get(key) == value:
                raise _FieldError(f"spec.{key}", f"{value!r} is not supported by meshlib")
        ports: list[ServicePort] = []
        for i, raw in enumerate(_list(spec.get("ports"), "spec.ports")):
            path = f"spec.ports[{i}]"
            item = _mapping(raw, path, required=True)
            target = item.get("targetPort")
            if target is not None and not isinstance(target, str):
                target = _port(target, f"{path}.targetPort")
            ports.append(
                ServicePort(
                    port=_port(item.get("port"), f"{path}.port"),
                    name=_str(item.get("name"), f"{path}.name") or "",
                    target_port=target,
                    protocol=_protocol(item.get("protocol"), f"{path}.protocol"),
                    app_protocol=_str(item.get("appProtocol"), f"{path}.appProtocol"),
                )
            )
        names = [p.name for p in ports]
        if len(ports) > 1 and (len(set(names)) != len(names) or "" in names):
            raise _FieldError("spec.ports", "ports must have unique, non-empty names")
        cluster_ip = _str(spec.get("clusterIP"), "spec.clusterIP")
        if cluster_ip not in (None, "", "None"):
            try:
                ipaddress.ip_address(cluster_ip)
            except ValueError:
                msg = f"{cluster_ip!r} is not an IP address"
                raise _FieldError("spec.clusterIP", msg) from None
        return Service(
            name=name,
            namespace=namespace,
            ports=tuple(ports),
            cluster_ip=cluster_ip or None,
            selector=_labels(spec.get("selector"), "spec.selector"),
        )
    except _FieldError as err:
        raise _wrap("Service", doc, err) from None


def _endpoint(raw: Any, path: str, address_type: str) -> Endpoint:
    item = _mapping(raw, path, required=True)
    addresses: list[str] = []
    raw_addresses = _list(item.get("addresses"), f"{path}.addresses")
    if not raw_addresses:
        raise _FieldError(f"{path}.addresses", "must list at least one address")
    for j, addr in enumerate(raw_addresses):
        apath = f"{path}.addresses[{j}]"
        text = _str(addr, apath, required=True)
        assert text is not None
        if address_type != "FQDN":
            try:
                ip = ipaddress.ip_address(text)
            except ValueError:
                raise _FieldError(apath, f"{text!r} is not an {address_type} address") from None
            if ip.version != (4 if address_type == "IPv4" else 6):
                raise _FieldError(apath, f"{text!r} is not an {address_type} address")
        addresses.append(text)
    cond = _mapping(item.get("conditions"), f"{path}.conditions")
    ref = item.get("targetRef")
    target_ref = None
    if ref is not None:
        rpath = f"{path}.targetRef"
        refmap = _mapping(ref, rpath)
        target_ref = ObjectRef(
            kind=_str(refmap.get("kind"), f"{rpath}.kind") or "",
            name=_str(refmap.get("name"), f"{rpath}.name") or "",
            namespace=_str(refmap.get("namespace"), f"{rpath}.namespace") or "",
        )
    return Endpoint(
        addresses=tuple(addresses),
        conditions=EndpointConditions(
            ready=_bool(cond.get("ready"), f"{path}.conditions.ready"),
            serving=_bool(cond.get("serving"), f"{path}.conditions.serving"),
            terminating=_bool(cond.get("terminating"), f"{path}.conditions.terminating"),
        ),
        node_name=_str(item.get("nodeName"), f"{path}.nodeName"),
        zone=_str(item.get("zone"), f"{path}.zone"),
        target_ref=target_ref,
    )


def parse_endpoint_slice(doc: Mapping[str, Any]) -> EndpointSlice:
    """Validate one ``kind: EndpointSlice`` document."""
    try:
        name, namespace, labels = _metadata(doc)
        address_type = _str(doc.get("addressType"), "addressType", required=True)
        if address_type not in _ADDRESS_TYPES:
            raise _FieldError("addressType", f"must be one of {', '.join(_ADDRESS_TYPES)}")
        endpoints = tuple(
            _endpoint(raw, f"endpoints[{i}]", address_type)
            for i, raw in enumerate(_list(doc.get("endpoints"), "endpoints"))
        )
        ports: list[EndpointPort] = []
        for i, raw in enumerate(_list(doc.get("ports"), "ports")):
            path = f"ports[{i}]"
            item = _mapping(raw, path, required=True)
            port = item.get("port")
            ports.append(
                EndpointPort(
                    port=None if port is None else _port(port, f"{path}.port"),
                    name=_str(item.get("name"), f"{path}.name") or "",
                    protocol=_protocol(item.get("protocol"), f"{path}.protocol"),
                )
            )
        return EndpointSlice(
            name=name,
            namespace=namespace,
            service_name=labels.get(SERVICE_NAME_LABEL),
            address_type=address_type,
            endpoints=endpoints,
            ports=tuple(ports),
            labels=labels,
        )
    except _FieldError as err:
        raise _wrap("EndpointSlice", doc, err) from None


def parse_pod(doc: Mapping[str, Any]) -> Pod:
    """Validate one ``kind: Pod`` document (only metadata and serviceAccountName are read)."""
    try:
        name, namespace, labels = _metadata(doc)
        spec = _mapping(doc.get("spec"), "spec")
        account = _str(spec.get("serviceAccountName"), "spec.serviceAccountName")
        return Pod(name, namespace, labels, account or "default")
    except _FieldError as err:
        raise _wrap("Pod", doc, err) from None


def parse_endpoints(doc: Mapping[str, Any]) -> EndpointSlice:
    """Validate one ``kind: Endpoints`` (core v1) document, as an equivalent EndpointSlice.

    ``subsets[].addresses`` become ready endpoints and ``notReadyAddresses`` not-ready
    ones; the slice is labelled for the Service of the same name.
    """
    try:
        name, namespace, labels = _metadata(doc)
        endpoints: list[Endpoint] = []
        ports: dict[str, EndpointPort] = {}
        for i, raw in enumerate(_list(doc.get("subsets"), "subsets")):
            path = f"subsets[{i}]"
            subset = _mapping(raw, path, required=True)
            for key, ready in (("addresses", True), ("notReadyAddresses", False)):
                for j, item in enumerate(_list(subset.get(key), f"{path}.{key}")):
                    apath = f"{path}.{key}[{j}]"
                    ip = _str(_mapping(item, apath).get("ip"), f"{apath}.ip", required=True)
                    endpoint = _endpoint(
                        {"addresses": [ip], "conditions": {"ready": ready}},
                        apath,
                        "IPv6" if ":" in str(ip) else "IPv4",
                    )
                    endpoints.append(endpoint)
            for j, item in enumerate(_list(subset.get("ports"), f"{path}.ports")):
                ppath = f"{path}.ports[{j}]"
                port = _mapping(item, ppath, required=True)
                pname = _str(port.get("name"), f"{ppath}.name") or ""
                ports[pname] = EndpointPort(
                    _port(port.get("port"), f"{ppath}.port"),
                    pname,
                    _protocol(port.get("protocol"), f"{ppath}.protocol"),
                )
        return EndpointSlice(
            name=name,
            namespace=namespace,
            service_name=name,
            address_type="IPv4",
            endpoints=tuple(endpoints),
            ports=tuple(ports.values()),
            labels={**labels, SERVICE_NAME_LABEL: name},
        )
    except _FieldError as err:
        raise _wrap("Endpoints", doc, err) from None
