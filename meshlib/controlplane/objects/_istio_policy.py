"""Istio's DestinationRule and its ``TrafficPolicy``: validated models and merging.

A policy may appear at the top of a DestinationRule, per port, per subset and per port
within a subset; :meth:`TrafficPolicy.for_port` and :func:`effective_policy` apply
Istio's precedence (the more specific setting replaces each whole section).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ._fields import (
    FieldError,
    as_bool,
    as_duration,
    as_float,
    as_int,
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
    "ConnectionPool",
    "ConsistentHash",
    "DestinationRule",
    "LoadBalancer",
    "LocalityLb",
    "OutlierDetection",
    "Subset",
    "TlsSettings",
    "TrafficPolicy",
    "Warmup",
    "effective_policy",
    "parse_destination_rule",
    "parse_traffic_policy",
]

_SIMPLE = ("UNSPECIFIED", "ROUND_ROBIN", "LEAST_REQUEST", "LEAST_CONN", "RANDOM", "PASSTHROUGH")
_TLS_MODES = ("DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL")
_SECTIONS = ("load_balancer", "connection_pool", "outlier_detection", "tls")


@dataclass(frozen=True)
class ConsistentHash:
    """``loadBalancer.consistentHash``: ``key`` is header, cookie, source_ip or query."""

    key: str
    name: str = ""
    cookie_path: str = ""
    cookie_ttl: float | None = None
    algorithm: str = "RING_HASH"  # or MAGLEV
    minimum_ring_size: int | None = None
    maglev_table_size: int | None = None


@dataclass(frozen=True)
class LocalityLb:
    """``loadBalancer.localityLbSetting``."""

    enabled: bool = True
    distribute: tuple[tuple[str, Mapping[str, int]], ...] = ()
    failover: tuple[tuple[str, str], ...] = ()
    failover_priority: tuple[str, ...] = ()


@dataclass(frozen=True)
class Warmup:
    """``loadBalancer.warmup`` (or ``warmupDurationSecs``): Envoy's slow start."""

    duration: float
    minimum_percent: float | None = None  # Envoy's default: 10
    aggression: float | None = None  # Envoy's default: 1.0


@dataclass(frozen=True)
class LoadBalancer:
    """``loadBalancer``: a simple policy or a consistent hash, locality settings, warmup."""

    simple: str | None = None
    consistent_hash: ConsistentHash | None = None
    locality: LocalityLb | None = None
    warmup: Warmup | None = None


@dataclass(frozen=True)
class ConnectionPool:
    """``connectionPool`` (None = not set, Envoy/Istio default applies)."""

    max_connections: int | None = None
    connect_timeout: float | None = None
    http1_max_pending_requests: int | None = None
    http2_max_requests: int | None = None
    max_requests_per_connection: int | None = None
    max_retries: int | None = None
    idle_timeout: float | None = None


@dataclass(frozen=True)
class OutlierDetection:
    """``outlierDetection``."""

    consecutive_5xx: int | None = None
    consecutive_gateway_errors: int | None = None
    interval: float | None = None
    base_ejection_time: float | None = None
    max_ejection_percent: int | None = None
    min_health_percent: int | None = None


@dataclass(frozen=True)
class TlsSettings:
    """``tls``: ``mode`` and, for SIMPLE/MUTUAL, the files and names to verify."""

    mode: str
    client_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    sni: str | None = None
    subject_alt_names: tuple[str, ...] = ()
    insecure_skip_verify: bool = False


@dataclass(frozen=True)
class TrafficPolicy:
    """A ``trafficPolicy``; ``port_level`` maps a port to its overriding policy."""

    load_balancer: LoadBalancer | None = None
    connection_pool: ConnectionPool | None = None
    outlier_detection: OutlierDetection | None = None
    tls: TlsSettings | None = None
    port_level: Mapping[int, TrafficPolicy] = field(default_factory=dict)

    def for_port(self, port: int) -> TrafficPolicy:
        """This policy with the sections set for ``port`` replacing the top-level ones."""
        override = self.port_level.get(port)
        if override is None:
            return replace(self, port_level={})
        return _overlay(replace(self, port_level={}), override)


@dataclass(frozen=True)
class Subset:
    """A DestinationRule subset: endpoints with ``labels``, with its own policy."""

    name: str
    labels: Mapping[str, str]
    traffic_policy: TrafficPolicy | None = None


@dataclass(frozen=True)
class DestinationRule:
    """A ``networking.istio.io/DestinationRule``."""

    name: str
    namespace: str
    host: str
    traffic_policy: TrafficPolicy | None = None
    subsets: tuple[Subset, ...] = ()


def _overlay(base: TrafficPolicy, top: TrafficPolicy) -> TrafficPolicy:
    changes = {s: getattr(top, s) for s in _SECTIONS if getattr(top, s) is not None}
    return replace(base, **changes)


def effective_policy(
    top: TrafficPolicy | None, subset: TrafficPolicy | None, port: int
) -> TrafficPolicy:
    """The policy for one cluster: the rule's, then the subset's, each at ``port``."""
    out = TrafficPolicy() if top is None else top.for_port(port)
    if subset is not None:
        out = _overlay(out, subset.for_port(port))
    return out


def _consistent_hash(raw: Any, path: str) -> ConsistentHash:
    item = as_mapping(raw, path)
    keys = [
        k
        for k in ("httpHeaderName", "httpCookie", "useSourceIp", "httpQueryParameterName")
        if item.get(k) not in (None, False)
    ]
    if len(keys) != 1:
        raise FieldError(
            path,
            "must set exactly one of httpHeaderName, httpCookie, useSourceIp, "
            "httpQueryParameterName",
        )
    key = keys[0]
    name, cookie_path, ttl = "", "", None
    if key == "httpHeaderName":
        name = str(as_str(item[key], f"{path}.httpHeaderName", required=True)).lower()
    elif key == "httpQueryParameterName":
        name = str(as_str(item[key], f"{path}.httpQueryParameterName", required=True))
    elif key == "httpCookie":
        cookie = as_mapping(item[key], f"{path}.httpCookie")
        name = str(as_str(cookie.get("name"), f"{path}.httpCookie.name", required=True))
        cookie_path = as_str(cookie.get("path"), f"{path}.httpCookie.path") or ""
        ttl = as_duration(cookie.get("ttl"), f"{path}.httpCookie.ttl")
    else:
        as_bool(item[key], f"{path}.useSourceIp")
    kind = {"httpHeaderName": "header", "httpCookie": "cookie", "useSourceIp": "source_ip"}
    ring = as_mapping(item.get("ringHash"), f"{path}.ringHash")
    maglev = as_mapping(item.get("maglev"), f"{path}.maglev")
    if ring and maglev:
        raise FieldError(path, "set at most one of ringHash, maglev")
    min_ring = as_int(
        ring.get("minimumRingSize", item.get("minimumRingSize")),
        f"{path}.ringHash.minimumRingSize",
        minimum=1,
        maximum=8_388_608,
    )
    table = as_int(maglev.get("tableSize"), f"{path}.maglev.tableSize", minimum=1)
    return ConsistentHash(
        key=kind.get(key, "query"),
        name=name,
        cookie_path=cookie_path,
        cookie_ttl=ttl,
        algorithm="MAGLEV" if maglev else "RING_HASH",
        minimum_ring_size=min_ring,
        maglev_table_size=table,
    )


def _locality(raw: Any, path: str) -> LocalityLb:
    item = as_mapping(raw, path)
    distribute = []
    for i, d in enumerate(as_list(item.get("distribute"), f"{path}.distribute")):
        dpath = f"{path}.distribute[{i}]"
        dmap = as_mapping(d, dpath, required=True)
        to = {
            str(k): as_int(v, f"{dpath}.to.{k}", maximum=100) or 0
            for k, v in as_mapping(dmap.get("to"), f"{dpath}.to", required=True).items()
        }
        distribute.append((str(as_str(dmap.get("from"), f"{dpath}.from", required=True)), to))
    failover = []
    for i, f in enumerate(as_list(item.get("failover"), f"{path}.failover")):
        fpath = f"{path}.failover[{i}]"
        fmap = as_mapping(f, fpath, required=True)
        failover.append(
            (
                str(as_str(fmap.get("from"), f"{fpath}.from", required=True)),
                str(as_str(fmap.get("to"), f"{fpath}.to", required=True)),
            )
        )
    if distribute and failover:
        raise FieldError(path, "set at most one of distribute, failover")
    enabled = as_bool(item.get("enabled"), f"{path}.enabled")
    return LocalityLb(
        enabled=True if enabled is None else enabled,
        distribute=tuple(distribute),
        failover=tuple(failover),
        failover_priority=as_str_list(item.get("failoverPriority"), f"{path}.failoverPriority"),
    )


def _warmup(item: Mapping[str, Any], path: str) -> Warmup | None:
    """``warmupDurationSecs`` (a duration) or ``warmup{duration, minimumPercent,
    aggression}``; at most one of them."""
    legacy, raw = item.get("warmupDurationSecs"), item.get("warmup")
    if legacy is not None and raw is not None:
        raise FieldError(path, "set at most one of warmupDurationSecs, warmup")
    if legacy is not None:
        seconds = as_duration(legacy, f"{path}.warmupDurationSecs", positive=True)
        return None if seconds is None else Warmup(seconds)
    if raw is None:
        return None
    wpath = f"{path}.warmup"
    warm = as_mapping(raw, wpath)
    seconds = as_duration(warm.get("duration"), f"{wpath}.duration", positive=True)
    if seconds is None:
        raise FieldError(f"{wpath}.duration", "is required")
    aggression = as_float(warm.get("aggression"), f"{wpath}.aggression", minimum=0, maximum=1e6)
    if aggression is not None and aggression <= 0:
        raise FieldError(f"{wpath}.aggression", "must be above 0")
    minimum = as_float(
        warm.get("minimumPercent"), f"{wpath}.minimumPercent", minimum=0, maximum=100
    )
    return Warmup(seconds, minimum, aggression)


def _load_balancer(raw: Any, path: str) -> LoadBalancer:
    item = as_mapping(raw, path)
    simple = item.get("simple")
    chash = item.get("consistentHash")
    if simple is not None and chash is not None:
        raise FieldError(path, "set at most one of simple, consistentHash")
    return LoadBalancer(
        warmup=_warmup(item, path),
        simple=None if simple is None else one_of(simple, f"{path}.simple", _SIMPLE, ""),
        consistent_hash=None
        if chash is None
        else _consistent_hash(chash, f"{path}.consistentHash"),
        locality=None
        if item.get("localityLbSetting") is None
        else _locality(item["localityLbSetting"], f"{path}.localityLbSetting"),
    )


def _connection_pool(raw: Any, path: str) -> ConnectionPool:
    item = as_mapping(raw, path)
    tcp = as_mapping(item.get("tcp"), f"{path}.tcp")
    http = as_mapping(item.get("http"), f"{path}.http")
    return ConnectionPool(
        max_connections=as_int(tcp.get("maxConnections"), f"{path}.tcp.maxConnections"),
        connect_timeout=as_duration(
            tcp.get("connectTimeout"), f"{path}.tcp.connectTimeout", positive=True
        ),
        http1_max_pending_requests=as_int(
            http.get("http1MaxPendingRequests"), f"{path}.http.http1MaxPendingRequests"
        ),
        http2_max_requests=as_int(http.get("http2MaxRequests"), f"{path}.http.http2MaxRequests"),
        max_requests_per_connection=as_int(
            http.get("maxRequestsPerConnection"), f"{path}.http.maxRequestsPerConnection"
        ),
        max_retries=as_int(http.get("maxRetries"), f"{path}.http.maxRetries"),
        idle_timeout=as_duration(http.get("idleTimeout"), f"{path}.http.idleTimeout"),
    )


def _outlier_detection(raw: Any, path: str) -> OutlierDetection:
    item = as_mapping(raw, path)
    return OutlierDetection(
        consecutive_5xx=as_int(item.get("consecutive5xxErrors"), f"{path}.consecutive5xxErrors"),
        consecutive_gateway_errors=as_int(
            item.get("consecutiveGatewayErrors"), f"{path}.consecutiveGatewayErrors"
        ),
        interval=as_duration(item.get("interval"), f"{path}.interval", positive=True),
        base_ejection_time=as_duration(
            item.get("baseEjectionTime"), f"{path}.baseEjectionTime", positive=True
        ),
        max_ejection_percent=as_int(
            item.get("maxEjectionPercent"), f"{path}.maxEjectionPercent", maximum=100
        ),
        min_health_percent=as_int(
            item.get("minHealthPercent"), f"{path}.minHealthPercent", maximum=100
        ),
    )


def _tls(raw: Any, path: str) -> TlsSettings:
    item = as_mapping(raw, path)
    mode = one_of(item.get("mode"), f"{path}.mode", _TLS_MODES, "DISABLE")
    settings = TlsSettings(
        mode=mode,
        client_certificate=as_str(item.get("clientCertificate"), f"{path}.clientCertificate"),
        private_key=as_str(item.get("privateKey"), f"{path}.privateKey"),
        ca_certificates=as_str(item.get("caCertificates"), f"{path}.caCertificates"),
        sni=as_str(item.get("sni"), f"{path}.sni"),
        subject_alt_names=as_str_list(item.get("subjectAltNames"), f"{path}.subjectAltNames"),
        insecure_skip_verify=bool(
            as_bool(item.get("insecureSkipVerify"), f"{path}.insecureSkipVerify")
        ),
    )
    if mode == "MUTUAL" and not (settings.client_certificate and settings.private_key):
        raise FieldError(path, "MUTUAL needs clientCertificate and privateKey")
    return settings


def parse_traffic_policy(raw: Any, path: str, *, port_level: bool = True) -> TrafficPolicy:
    """Validate one ``trafficPolicy`` (or one ``portLevelSettings`` entry)."""
    item = as_mapping(raw, path)
    sections: dict[str, Any] = {}
    for key, attr, parse in (
        ("loadBalancer", "load_balancer", _load_balancer),
        ("connectionPool", "connection_pool", _connection_pool),
        ("outlierDetection", "outlier_detection", _outlier_detection),
        ("tls", "tls", _tls),
    ):
        if item.get(key) is not None:
            sections[attr] = parse(item[key], f"{path}.{key}")
    ports: dict[int, TrafficPolicy] = {}
    if port_level:
        for i, raw_port in enumerate(
            as_list(item.get("portLevelSettings"), f"{path}.portLevelSettings")
        ):
            ppath = f"{path}.portLevelSettings[{i}]"
            pmap = as_mapping(raw_port, ppath, required=True)
            number = as_mapping(pmap.get("port"), f"{ppath}.port", required=True).get("number")
            port = as_port(number, f"{ppath}.port.number")
            if port in ports:
                raise FieldError(f"{ppath}.port.number", f"port {port} is listed twice")
            ports[port] = parse_traffic_policy(pmap, ppath, port_level=False)
    elif item.get("portLevelSettings") is not None:
        raise FieldError(f"{path}.portLevelSettings", "cannot be nested")
    return TrafficPolicy(port_level=ports, **sections)


def parse_destination_rule(doc: Mapping[str, Any]) -> DestinationRule:
    """Validate one ``kind: DestinationRule`` document."""
    try:
        name, namespace, _ = metadata(doc)
        spec = as_mapping(doc.get("spec"), "spec", required=True)
        subsets: list[Subset] = []
        seen: set[str] = set()
        for i, raw in enumerate(as_list(spec.get("subsets"), "spec.subsets")):
            path = f"spec.subsets[{i}]"
            item = as_mapping(raw, path, required=True)
            sname = str(as_str(item.get("name"), f"{path}.name", required=True))
            if sname in seen:
                raise FieldError(f"{path}.name", f"duplicate subset {sname!r}")
            seen.add(sname)
            policy = item.get("trafficPolicy")
            subsets.append(
                Subset(
                    name=sname,
                    labels={
                        str(k): str(as_str(v, f"{path}.labels.{k}"))
                        for k, v in as_mapping(item.get("labels"), f"{path}.labels").items()
                    },
                    traffic_policy=None
                    if policy is None
                    else parse_traffic_policy(policy, f"{path}.trafficPolicy"),
                )
            )
        policy = spec.get("trafficPolicy")
        return DestinationRule(
            name=name,
            namespace=namespace,
            host=str(as_str(spec.get("host"), "spec.host", required=True)),
            traffic_policy=None
            if policy is None
            else parse_traffic_policy(policy, "spec.trafficPolicy"),
            subsets=tuple(subsets),
        )
    except FieldError as err:
        raise wrap("DestinationRule", doc, err) from None
