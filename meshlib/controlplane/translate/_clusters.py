"""DestinationRules -> Clusters and ClusterLoadAssignments, one per port and subset.

Each service port gets cluster ``outbound|port||host`` and, for every DestinationRule
subset, ``outbound|port|subset|host`` whose endpoints are the instances carrying the
subset's labels. The effective traffic policy (top level, port level, subset) sets
the load balancer, circuit-breaker thresholds (all four, Istio's defaults when unset),
outlier detection and the upstream TLS context. Unlike istiod's gRPC generator, outlier
detection and the full thresholds are generated for proxyless clients too.
"""

from __future__ import annotations

from collections import defaultdict

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2 as ec
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo_pb2
from google.protobuf import any_pb2, struct_pb2, wrappers_pb2

from ..objects._istio_policy import Subset, TrafficPolicy, Warmup
from ._registry import Instance, MeshService
from ._routes import duration
from ._rules import RuleIndex, cluster_name, subset_instances
from ._tls import upstream_tls

__all__ = [
    "HTTP_PROTOCOL_OPTIONS",
    "MAX_THRESHOLD",
    "ads_source",
    "apply_locality",
    "build_cluster",
    "build_load_assignment",
]

MAX_THRESHOLD = 2**32 - 1  # istiod's default for every circuit-breaker threshold
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_CONNECT_TIMEOUT = 10.0
_LB = {
    "ROUND_ROBIN": cluster_pb2.Cluster.ROUND_ROBIN,
    "LEAST_REQUEST": cluster_pb2.Cluster.LEAST_REQUEST,
    "LEAST_CONN": cluster_pb2.Cluster.LEAST_REQUEST,
    "RANDOM": cluster_pb2.Cluster.RANDOM,
}


def ads_source() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3
    )


def _pack(msg: object) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(msg, deterministic=True)
    return out


def _slow_start(config: cluster_pb2.Cluster.SlowStartConfig, warmup: Warmup) -> None:
    config.slow_start_window.CopyFrom(duration(warmup.duration))
    if warmup.aggression is not None:
        config.aggression.default_value = warmup.aggression
        config.aggression.runtime_key = "upstream.slow_start.aggression"
    if warmup.minimum_percent is not None:
        config.min_weight_percent.value = warmup.minimum_percent


def _load_balancer(cluster: cluster_pb2.Cluster, policy: TrafficPolicy) -> None:
    """Istio's loadBalancer; warmup becomes slow_start_config (ROUND_ROBIN and
    LEAST_REQUEST only, as istiod: Envoy has no slow start for the others)."""
    lb = policy.load_balancer
    cluster.lb_policy = cluster_pb2.Cluster.ROUND_ROBIN
    if lb is None:
        return
    if lb.consistent_hash is not None:
        ch = lb.consistent_hash
        if ch.algorithm == "MAGLEV":
            cluster.lb_policy = cluster_pb2.Cluster.MAGLEV
            if ch.maglev_table_size is not None:
                cluster.maglev_lb_config.table_size.value = ch.maglev_table_size
        else:
            cluster.lb_policy = cluster_pb2.Cluster.RING_HASH
            if ch.minimum_ring_size is not None:
                cluster.ring_hash_lb_config.minimum_ring_size.value = ch.minimum_ring_size
    elif lb.simple in _LB:
        cluster.lb_policy = _LB[lb.simple]
    if lb.warmup is not None and lb.consistent_hash is None:
        if cluster.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN:
            _slow_start(cluster.round_robin_lb_config.slow_start_config, lb.warmup)
        elif cluster.lb_policy == cluster_pb2.Cluster.LEAST_REQUEST:
            _slow_start(cluster.least_request_lb_config.slow_start_config, lb.warmup)
    loc = lb.locality
    if loc is not None and loc.enabled and loc.distribute:
        cluster.common_lb_config.locality_weighted_lb_config.SetInParent()


def _thresholds(cluster: cluster_pb2.Cluster, policy: TrafficPolicy) -> None:
    cp = policy.connection_pool
    t = circuit_breaker_pb2.CircuitBreakers.Thresholds(
        priority=base_pb2.DEFAULT,
        max_connections=wrappers_pb2.UInt32Value(value=MAX_THRESHOLD),
        max_pending_requests=wrappers_pb2.UInt32Value(value=MAX_THRESHOLD),
        max_requests=wrappers_pb2.UInt32Value(value=MAX_THRESHOLD),
        max_retries=wrappers_pb2.UInt32Value(value=MAX_THRESHOLD),
        track_remaining=True,
    )
    if cp is not None:
        for attr, value in (
            ("max_connections", cp.max_connections),
            ("max_pending_requests", cp.http1_max_pending_requests),
            ("max_requests", cp.http2_max_requests),
            ("max_retries", cp.max_retries),
        ):
            if value is not None:
                getattr(t, attr).value = value
        if cp.connect_timeout is not None:
            cluster.connect_timeout.CopyFrom(duration(cp.connect_timeout))
    cluster.circuit_breakers.thresholds.append(t)


def _outlier(cluster: cluster_pb2.Cluster, policy: TrafficPolicy) -> None:
    od = policy.outlier_detection
    if od is None:
        return
    out = outlier_detection_pb2.OutlierDetection()
    if od.consecutive_5xx is not None:
        out.consecutive_5xx.value = od.consecutive_5xx
        out.enforcing_consecutive_5xx.value = 100 if od.consecutive_5xx > 0 else 0
    if od.consecutive_gateway_errors is not None:
        out.consecutive_gateway_failure.value = od.consecutive_gateway_errors
        out.enforcing_consecutive_gateway_failure.value = (
            100 if od.consecutive_gateway_errors > 0 else 0
        )
    if od.interval is not None:
        out.interval.CopyFrom(duration(od.interval))
    if od.base_ejection_time is not None:
        out.base_ejection_time.CopyFrom(duration(od.base_ejection_time))
    if od.max_ejection_percent is not None:
        out.max_ejection_percent.value = od.max_ejection_percent
    out.enforcing_success_rate.value = 0  # as istiod: only the consecutive-error checks
    cluster.outlier_detection.CopyFrom(out)
    if od.min_health_percent is not None:
        cluster.common_lb_config.healthy_panic_threshold.value = od.min_health_percent


def _protocol_options(cluster: cluster_pb2.Cluster, policy: TrafficPolicy, http2: bool) -> None:
    cp = policy.connection_pool
    per_conn = cp.max_requests_per_connection if cp else None
    idle = cp.idle_timeout if cp else None
    if not (http2 or per_conn or idle):
        return
    opts = hpo_pb2.HttpProtocolOptions()
    if http2:
        opts.explicit_http_config.http2_protocol_options.SetInParent()
    else:
        opts.explicit_http_config.http_protocol_options.SetInParent()
    if per_conn:
        opts.common_http_protocol_options.max_requests_per_connection.value = per_conn
    if idle is not None:
        opts.common_http_protocol_options.idle_timeout.CopyFrom(duration(idle))
    cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].CopyFrom(_pack(opts))


def build_cluster(
    index: RuleIndex, service: MeshService, port: int, subset: Subset | None, *, envoy: bool
) -> cluster_pb2.Cluster:
    """Cluster ``outbound|port|subset|host`` for a proxyless client or an Envoy."""
    name = cluster_name(port, service.hostname, subset.name if subset else "")
    policy = index.policy(service, port, subset.name if subset else "")
    cluster = cluster_pb2.Cluster(
        name=name, alt_stat_name=f"{name};", connect_timeout=duration(_CONNECT_TIMEOUT)
    )
    if envoy and service.resolution in ("DNS", "DNS_ROUND_ROBIN"):
        strict = service.resolution == "DNS"
        cluster.type = cluster_pb2.Cluster.STRICT_DNS if strict else cluster_pb2.Cluster.LOGICAL_DNS
        cluster.load_assignment.CopyFrom(build_load_assignment(index, service, port, subset))
    else:
        cluster.type = cluster_pb2.Cluster.EDS
        cluster.eds_cluster_config.eds_config.CopyFrom(ads_source())
        cluster.eds_cluster_config.service_name = name
    _load_balancer(cluster, policy)
    _thresholds(cluster, policy)
    _outlier(cluster, policy)
    info = service.port(port)
    http2 = info is not None and info.protocol in ("GRPC", "HTTP2")
    _protocol_options(cluster, policy, http2 and envoy)
    upstream_tls(cluster, index, service, port, subset, policy, envoy=envoy)
    return cluster


def _lb_endpoint(inst: Instance, address: str) -> ec.LbEndpoint:
    ep = ec.LbEndpoint(
        endpoint=ec.Endpoint(
            address=address_pb2.Address(
                socket_address=address_pb2.SocketAddress(address=address, port_value=inst.port)
            )
        ),
        health_status=inst.health,
        load_balancing_weight=wrappers_pb2.UInt32Value(value=inst.weight),
    )
    if inst.tls_mode == "istio":
        ep.metadata.filter_metadata["envoy.transport_socket_match"].CopyFrom(
            struct_pb2.Struct(fields={"tlsMode": struct_pb2.Value(string_value="istio")})
        )
    return ep


def build_load_assignment(
    index: RuleIndex,
    service: MeshService,
    port: int,
    subset: Subset | None,
    *,
    resolve_dns: bool = False,
) -> endpoint_pb2.ClusterLoadAssignment:
    """The endpoints of one cluster, one locality per (region, zone, subzone).

    A locality's weight is the sum of its endpoints' weights, so traffic spreads evenly
    per endpoint across localities. ``resolve_dns`` replaces host names (DNS
    ServiceEntries) with their addresses, for clients that only take IPs.
    """
    name = cluster_name(port, service.hostname, subset.name if subset else "")
    by_locality: dict[tuple[str, str, str], list[ec.LbEndpoint]] = defaultdict(list)
    for inst in subset_instances(service, port, subset):
        addresses = index.registry.resolve_dns(inst.address) if resolve_dns else (inst.address,)
        for address in addresses:
            by_locality[inst.locality].append(_lb_endpoint(inst, address))
    localities = [
        ec.LocalityLbEndpoints(
            locality=base_pb2.Locality(region=loc[0], zone=loc[1], sub_zone=loc[2]),
            lb_endpoints=eps,
            load_balancing_weight=wrappers_pb2.UInt32Value(
                value=sum(e.load_balancing_weight.value for e in eps)
            ),
        )
        for loc, eps in sorted(by_locality.items())
    ]
    return endpoint_pb2.ClusterLoadAssignment(cluster_name=name, endpoints=localities)


def _locality_text(loc: base_pb2.Locality) -> str:
    return "/".join((loc.region, loc.zone, loc.sub_zone)).rstrip("/")


def _covers(pattern: str, locality: str) -> bool:
    if pattern in ("*", locality):
        return True
    if pattern.endswith("/*"):
        pattern = pattern[:-2]
    return locality == pattern or locality.startswith(pattern + "/")


def apply_locality(
    cla: endpoint_pb2.ClusterLoadAssignment, policy: TrafficPolicy, node: tuple[str, str, str]
) -> endpoint_pb2.ClusterLoadAssignment:
    """Istio's locality load balancing for a client in locality ``node``.

    ``distribute`` sets the locality weights (percent) for clients it names; otherwise,
    when outlier detection is on, localities get priorities by proximity (same
    sub-zone 0, zone 1, region 2, else 3), with ``failover`` regions next after the
    client's own region.
    """
    lb = policy.load_balancer
    setting = lb.locality if lb is not None else None
    if setting is not None and not setting.enabled:
        return cla
    me = "/".join(node).rstrip("/")
    out = endpoint_pb2.ClusterLoadAssignment()
    out.CopyFrom(cla)
    if setting is not None and setting.distribute:
        for source, to in setting.distribute:
            if _covers(source, me):
                for loc in out.endpoints:
                    here = _locality_text(loc.locality)
                    pct = max((w for dst, w in to.items() if _covers(dst, here)), default=0)
                    loc.load_balancing_weight.value = pct
                kept = [loc for loc in out.endpoints if loc.load_balancing_weight.value > 0]
                del out.endpoints[:]
                out.endpoints.extend(kept)
                break
        return out
    if policy.outlier_detection is None or not me:
        return out
    failover = dict(setting.failover) if setting is not None else {}
    for loc in out.endpoints:
        there = (loc.locality.region, loc.locality.zone, loc.locality.sub_zone)
        if there == node:
            prio = 0
        elif there[:2] == node[:2]:
            prio = 1
        elif there[0] == node[0]:
            prio = 2
        elif failover.get(node[0]) == there[0]:
            prio = 3
        else:
            prio = 4
        loc.priority = prio
    used = sorted({loc.priority for loc in out.endpoints})
    for loc in out.endpoints:  # priorities must be contiguous from 0
        loc.priority = used.index(loc.priority)
    out.policy.overprovisioning_factor.value = 140
    return out
