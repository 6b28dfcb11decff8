"""Istio mesh-membership and security objects: validated models.

ServiceEntry and WorkloadEntry add hosts and workloads beside Kubernetes Services;
Sidecar scopes which hosts a workload sees; PeerAuthentication and AuthorizationPolicy
set the inbound side's mTLS mode and access rules.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._fields import (
    FieldError,
    as_int,
    as_labels,
    as_list,
    as_mapping,
    as_port,
    as_str,
    as_str_list,
    metadata,
    one_of,
    wrap,
)

__all__ = [
    "AuthorizationPolicy",
    "AuthzCondition",
    "AuthzRule",
    "PeerAuthentication",
    "ServiceEntry",
    "ServiceEntryPort",
    "Sidecar",
    "WorkloadEntry",
    "claim_path",
    "ip_block",
    "parse_authorization_policy",
    "parse_peer_authentication",
    "parse_service_entry",
    "parse_sidecar",
    "parse_workload_entry",
]

_RESOLUTIONS = ("NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN")
_MTLS_MODES = ("UNSET", "DISABLE", "PERMISSIVE", "STRICT")
_ACTIONS = ("ALLOW", "DENY", "AUDIT", "CUSTOM")
_SOURCE_FIELDS = ("principals", "requestPrincipals", "namespaces", "ipBlocks", "remoteIpBlocks")
_IP_FIELDS = ("ipBlocks", "remoteIpBlocks")
_OPERATION_FIELDS = ("hosts", "ports", "methods", "paths")
_WHEN_KEYS = (
    "source.ip",
    "source.namespace",
    "source.principal",
    "destination.port",
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
)


@dataclass(frozen=True)
class WorkloadEntry:
    """A ``WorkloadEntry`` (also an inline ServiceEntry endpoint)."""

    name: str
    namespace: str
    address: str
    ports: Mapping[str, int] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    locality: str = ""
    weight: int = 1
    service_account: str = "default"
    network: str = ""

    @property
    def dialable(self) -> bool:
        """False for an entry reached only through its network's gateway (no address) or
        over a Unix socket: neither is an endpoint a proxyless client can connect to."""
        return bool(self.address) and not self.address.startswith("unix://")


@dataclass(frozen=True)
class ServiceEntryPort:
    """One ``spec.ports[]`` entry."""

    number: int
    name: str
    protocol: str = "HTTP"
    target_port: int | None = None


@dataclass(frozen=True)
class ServiceEntry:
    """A ``ServiceEntry``: hosts served by static or DNS endpoints, or selected workloads."""

    name: str
    namespace: str
    hosts: tuple[str, ...]
    ports: tuple[ServiceEntryPort, ...]
    resolution: str = "NONE"
    location: str = "MESH_EXTERNAL"
    addresses: tuple[str, ...] = ()
    endpoints: tuple[WorkloadEntry, ...] = ()
    workload_selector: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Sidecar:
    """A ``Sidecar``: the egress hosts (``namespace/host``) its workloads may reach."""

    name: str
    namespace: str
    egress_hosts: tuple[str, ...]
    workload_selector: Mapping[str, str] | None = None


@dataclass(frozen=True)
class PeerAuthentication:
    """A ``PeerAuthentication``: inbound mTLS mode, optionally per port."""

    name: str
    namespace: str
    mode: str = "UNSET"
    port_modes: Mapping[int, str] = field(default_factory=dict)
    selector: Mapping[str, str] | None = None


@dataclass(frozen=True)
class AuthzCondition:
    """One field of a rule: ``values`` match, ``not_values`` must not (any of each)."""

    key: str
    values: tuple[str, ...] = ()
    not_values: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuthzRule:
    """A rule: every list is ANDed; each ``from``/``to`` entry is a group of conditions."""

    sources: tuple[tuple[AuthzCondition, ...], ...] = ()
    operations: tuple[tuple[AuthzCondition, ...], ...] = ()
    when: tuple[AuthzCondition, ...] = ()


@dataclass(frozen=True)
class AuthorizationPolicy:
    """An ``AuthorizationPolicy``; no rules with ALLOW means deny everything."""

    name: str
    namespace: str
    action: str = "ALLOW"
    rules: tuple[AuthzRule, ...] = ()
    selector: Mapping[str, str] | None = None
    provider: str = ""  # the extension provider of a CUSTOM policy


def _selector(raw: Any, path: str, key: str) -> dict[str, str] | None:
    if raw is None:
        return None
    return as_labels(as_mapping(raw, path).get(key), f"{path}.{key}")


def _address(value: Any, path: str, *, allow_dns: bool, network: str) -> str:
    text = as_str(value, path) or ""
    if not text:
        if not network:
            raise FieldError(path, "is required (unless network is set)")
        return text
    if text.startswith("unix://"):
        if len(text) == len("unix://"):
            raise FieldError(path, "a unix:// address needs a socket path")
        return text
    try:
        ipaddress.ip_address(text)
    except ValueError:
        if not allow_dns:
            raise FieldError(path, f"{text!r} is not an IP address") from None
    return text


def _workload(raw: Any, path: str, name: str, ns: str, *, dns: bool) -> WorkloadEntry:
    item = as_mapping(raw, path, required=True)
    network = as_str(item.get("network"), f"{path}.network") or ""
    return WorkloadEntry(
        name=name,
        namespace=ns,
        network=network,
        address=_address(item.get("address"), f"{path}.address", allow_dns=dns, network=network),
        ports={
            str(k): as_port(v, f"{path}.ports.{k}")
            for k, v in as_mapping(item.get("ports"), f"{path}.ports").items()
        },
        labels=as_labels(item.get("labels"), f"{path}.labels"),
        locality=as_str(item.get("locality"), f"{path}.locality") or "",
        weight=as_int(item.get("weight"), f"{path}.weight", minimum=1) or 1,
        service_account=as_str(item.get("serviceAccount"), f"{path}.serviceAccount") or "default",
    )


def parse_workload_entry(doc: Mapping[str, Any]) -> WorkloadEntry:
    """Validate one ``kind: WorkloadEntry`` document."""
    try:
        name, namespace, _ = metadata(doc)
        return _workload(doc.get("spec"), "spec", name, namespace, dns=True)
    except FieldError as err:
        raise wrap("WorkloadEntry", doc, err) from None


def parse_service_entry(doc: Mapping[str, Any]) -> ServiceEntry:
    """Validate one ``kind: ServiceEntry`` document."""
    try:
        name, namespace, _ = metadata(doc)
        spec = as_mapping(doc.get("spec"), "spec", required=True)
        ports = []
        for i, raw in enumerate(as_list(spec.get("ports"), "spec.ports")):
            path = f"spec.ports[{i}]"
            item = as_mapping(raw, path, required=True)
            target = item.get("targetPort")
            ports.append(
                ServiceEntryPort(
                    number=as_port(item.get("number"), f"{path}.number"),
                    name=str(as_str(item.get("name"), f"{path}.name", required=True)),
                    protocol=(as_str(item.get("protocol"), f"{path}.protocol") or "HTTP").upper(),
                    target_port=None if target is None else as_port(target, f"{path}.targetPort"),
                )
            )
        resolution = one_of(spec.get("resolution"), "spec.resolution", _RESOLUTIONS, "NONE")
        endpoints = tuple(
            _workload(e, f"spec.endpoints[{i}]", name, namespace, dns=resolution != "STATIC")
            for i, e in enumerate(as_list(spec.get("endpoints"), "spec.endpoints"))
        )
        selector = _selector(spec.get("workloadSelector"), "spec.workloadSelector", "labels")
        if selector is not None and endpoints:
            raise FieldError("spec.workloadSelector", "cannot be set together with endpoints")
        if resolution == "STATIC" and not endpoints and selector is None:
            raise FieldError("spec.endpoints", "STATIC resolution needs endpoints")
        return ServiceEntry(
            name=name,
            namespace=namespace,
            hosts=as_str_list(spec.get("hosts"), "spec.hosts", required=True),
            ports=tuple(ports),
            resolution=resolution,
            location=one_of(
                spec.get("location"),
                "spec.location",
                ("MESH_EXTERNAL", "MESH_INTERNAL"),
                "MESH_EXTERNAL",
            ),
            addresses=as_str_list(spec.get("addresses"), "spec.addresses"),
            endpoints=endpoints,
            workload_selector=selector,
        )
    except FieldError as err:
        raise wrap("ServiceEntry", doc, err) from None


def parse_sidecar(doc: Mapping[str, Any]) -> Sidecar:
    """Validate one ``kind: Sidecar`` document (egress host scoping only)."""
    try:
        name, namespace, _ = metadata(doc)
        spec = as_mapping(doc.get("spec"), "spec", required=True)
        hosts: list[str] = []
        for i, raw in enumerate(as_list(spec.get("egress"), "spec.egress")):
            path = f"spec.egress[{i}]"
            for j, host in enumerate(
                as_str_list(as_mapping(raw, path).get("hosts"), f"{path}.hosts", required=True)
            ):
                if "/" not in host:
                    raise FieldError(f"{path}.hosts[{j}]", f"{host!r} must be namespace/host")
                hosts.append(host)
        return Sidecar(
            name=name,
            namespace=namespace,
            egress_hosts=tuple(hosts),
            workload_selector=_selector(
                spec.get("workloadSelector"), "spec.workloadSelector", "labels"
            ),
        )
    except FieldError as err:
        raise wrap("Sidecar", doc, err) from None


def parse_peer_authentication(doc: Mapping[str, Any]) -> PeerAuthentication:
    """Validate one ``kind: PeerAuthentication`` document."""
    try:
        name, namespace, _ = metadata(doc)
        spec = as_mapping(doc.get("spec"), "spec")
        mtls = as_mapping(spec.get("mtls"), "spec.mtls")
        ports: dict[int, str] = {}
        for key, raw in as_mapping(spec.get("portLevelMtls"), "spec.portLevelMtls").items():
            path = f"spec.portLevelMtls.{key}"
            port = as_port(int(key) if str(key).isdigit() else key, path)
            ports[port] = one_of(as_mapping(raw, path).get("mode"), f"{path}.mode", _MTLS_MODES, "")
        selector = _selector(spec.get("selector"), "spec.selector", "matchLabels")
        if ports and selector is None:
            raise FieldError("spec.portLevelMtls", "needs spec.selector")
        return PeerAuthentication(
            name=name,
            namespace=namespace,
            mode=one_of(mtls.get("mode"), "spec.mtls.mode", _MTLS_MODES, "UNSET"),
            port_modes=ports,
            selector=selector,
        )
    except FieldError as err:
        raise wrap("PeerAuthentication", doc, err) from None


def _conditions(raw: Any, path: str, keys: tuple[str, ...]) -> tuple[AuthzCondition, ...]:
    item = as_mapping(raw, path, required=True)
    for key in item:
        base = key[3].lower() + key[4:] if key.startswith("not") else key
        if base not in keys:
            raise FieldError(f"{path}.{key}", f"is not supported (supported: {', '.join(keys)})")
    out = []
    for key in keys:
        not_key = "not" + key[0].upper() + key[1:]
        values = tuple(str(v) for v in as_list(item.get(key), f"{path}.{key}"))
        negated = tuple(str(v) for v in as_list(item.get(not_key), f"{path}.{not_key}"))
        if key in _IP_FIELDS:
            for field_name, given in ((key, values), (not_key, negated)):
                for i, value in enumerate(given):
                    ip_block(value, f"{path}.{field_name}[{i}]")
        if values or negated:
            out.append(AuthzCondition(key, values, negated))
    return tuple(out)


def ip_block(value: str, path: str) -> str:
    """An IP address or CIDR block as AuthorizationPolicy writes them (``10.0.0.0/8``)."""
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise FieldError(path, f"{value!r} is not an IP address or CIDR block") from None
    return value


def _bracketed(key: str) -> bool:
    """``request.headers[name]`` or ``request.auth.claims[a][b]...``."""
    if key.startswith("request.headers[") and key[-1] == "]":
        return True
    return claim_path(key) is not None


def claim_path(key: str) -> tuple[str, ...] | None:
    """The claim path of ``request.auth.claims[a][b]``, None for another key."""
    prefix = "request.auth.claims["
    if not key.startswith(prefix) or not key.endswith("]"):
        return None
    parts = key[len(prefix) : -1].split("][")
    return tuple(parts) if all(parts) else None


def _rule(raw: Any, path: str) -> AuthzRule:
    item = as_mapping(raw, path)
    sources = tuple(
        _conditions(
            as_mapping(f, f"{path}.from[{i}]").get("source"),
            f"{path}.from[{i}].source",
            _SOURCE_FIELDS,
        )
        for i, f in enumerate(as_list(item.get("from"), f"{path}.from"))
    )
    operations = tuple(
        _conditions(
            as_mapping(t, f"{path}.to[{i}]").get("operation"),
            f"{path}.to[{i}].operation",
            _OPERATION_FIELDS,
        )
        for i, t in enumerate(as_list(item.get("to"), f"{path}.to"))
    )
    when = []
    for i, w in enumerate(as_list(item.get("when"), f"{path}.when")):
        wpath = f"{path}.when[{i}]"
        wmap = as_mapping(w, wpath, required=True)
        key = str(as_str(wmap.get("key"), f"{wpath}.key", required=True))
        if key not in _WHEN_KEYS and not _bracketed(key):
            raise FieldError(f"{wpath}.key", f"unsupported key {key!r}")
        values = as_str_list(wmap.get("values"), f"{wpath}.values")
        negated = as_str_list(wmap.get("notValues"), f"{wpath}.notValues")
        if key in ("source.ip", "remote.ip"):
            for field_name, given in (("values", values), ("notValues", negated)):
                for j, value in enumerate(given):
                    ip_block(value, f"{wpath}.{field_name}[{j}]")
        if not values and not negated:
            raise FieldError(wpath, "must set values or notValues")
        when.append(AuthzCondition(key, values, negated))
    return AuthzRule(sources, operations, tuple(when))


def parse_authorization_policy(doc: Mapping[str, Any]) -> AuthorizationPolicy:
    """Validate one ``kind: AuthorizationPolicy`` document."""
    try:
        name, namespace, _ = metadata(doc)
        spec = as_mapping(doc.get("spec"), "spec")
        action = one_of(spec.get("action"), "spec.action", _ACTIONS, "ALLOW")
        provider = as_mapping(spec.get("provider"), "spec.provider")
        if action == "CUSTOM" and not provider.get("name"):
            raise FieldError("spec.provider.name", "is required with action CUSTOM")
        if action != "CUSTOM" and provider:
            raise FieldError("spec.provider", "is only allowed with action CUSTOM")
        return AuthorizationPolicy(
            name=name,
            namespace=namespace,
            action=action,
            provider=str(provider.get("name") or ""),
            rules=tuple(
                _rule(r, f"spec.rules[{i}]")
                for i, r in enumerate(as_list(spec.get("rules"), "spec.rules"))
            ),
            selector=_selector(spec.get("selector"), "spec.selector", "matchLabels"),
        )
    except FieldError as err:
        raise wrap("AuthorizationPolicy", doc, err) from None
