"""Cluster resources (CDS): discovery type, load balancing, circuit breakers, outlier detection.

EDS clusters name the ClusterLoadAssignment to watch (``eds_service_name``); STATIC,
STRICT_DNS and LOGICAL_DNS clusters carry theirs inline (``load_assignment``; DNS names
are resolved when connecting). AGGREGATE clusters (``cluster_type``
``envoy.clusters.aggregate``) have no endpoints of their own: ``aggregate_clusters``
names their children in fallback order (``_aggregate_config``). Sub-configurations and
their Envoy defaults live in ``_cluster_config`` and ``_lb_config`` (policy, slow start,
zone-aware routing).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from envoy.config.cluster.v3 import cluster_pb2
from google.protobuf import any_pb2

from ._aggregate_config import decode_aggregate
from ._base import ResourceError, duration_seconds, unpack
from ._cluster_config import (
    PEAK_EWMA_TYPE_URL,
    CircuitThresholds,
    LbConfig,
    OutlierDetection,
    RetryBudget,
    SlowStart,
    ZoneAware,
    decode_circuit_breakers,
    decode_lb_config,
    decode_outlier_detection,
)
from ._upstream_tls import (
    UpstreamTls,
    decode_transport_socket,
    decode_transport_socket_matches,
    decode_upstream_protocol,
)
from .endpoints import EndpointsResource, decode_load_assignment

__all__ = [
    "PEAK_EWMA_TYPE_URL",
    "CircuitThresholds",
    "ClusterResource",
    "ClusterType",
    "LbConfig",
    "OutlierDetection",
    "RetryBudget",
    "SlowStart",
    "UpstreamTls",
    "ZoneAware",
]

_INLINE_TYPES = {
    cluster_pb2.Cluster.STATIC: "STATIC",
    cluster_pb2.Cluster.STRICT_DNS: "STRICT_DNS",
    cluster_pb2.Cluster.LOGICAL_DNS: "LOGICAL_DNS",
}


@dataclass(frozen=True, slots=True)
class ClusterResource:
    """An upstream cluster. ``eds_service_name`` is the EDS resource to watch (EDS only)."""

    name: str
    eds_service_name: str
    lb_policy: str = "ROUND_ROBIN"
    connect_timeout: float = 5.0
    discovery_type: str = "EDS"
    load_assignment: EndpointsResource | None = None  # STATIC / STRICT_DNS / LOGICAL_DNS
    lb: LbConfig = field(default_factory=LbConfig)
    circuit_breakers: tuple[CircuitThresholds, ...] = (
        CircuitThresholds(),
        CircuitThresholds("HIGH"),
    )
    outlier_detection: OutlierDetection | None = None
    healthy_panic_threshold: float = 50.0  # percent; 0 disables panic mode
    tls: UpstreamTls | None = None  # transport_socket: None is plaintext
    upstream_protocol: str = "http1"  # http1, http2, or auto (ALPN over TLS)
    #: AGGREGATE only: the child clusters, in fallback order.
    aggregate_clusters: tuple[str, ...] = ()

    def thresholds(self, priority: str = "DEFAULT") -> CircuitThresholds:
        """The circuit-breaker thresholds for a routing priority (DEFAULT or HIGH)."""
        for t in self.circuit_breakers:
            if t.priority == priority:
                return t
        return CircuitThresholds(priority)


class ClusterType:
    type_url = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    type_name = "Cluster"
    all_resources_required_in_sotw = True

    def decode(self, resource: any_pb2.Any) -> tuple[str, ClusterResource]:
        msg = unpack(resource, cluster_pb2.Cluster, self.type_name)
        name = msg.name
        if not name:
            raise ResourceError(self.type_name, "", "name", "must not be empty")

        def fail(field: str, problem: str) -> ResourceError:
            return ResourceError(self.type_name, name, field, problem)

        discovery = msg.WhichOneof("cluster_discovery_type")
        eds_name = ""
        inline: EndpointsResource | None = None
        children: tuple[str, ...] = ()
        if discovery == "type" and msg.type == cluster_pb2.Cluster.EDS:
            kind = "EDS"
            cs = msg.eds_cluster_config.eds_config
            if not (cs.HasField("ads") or cs.HasField("self")):
                raise fail("eds_cluster_config.eds_config", "must be ads or self")
            eds_name = msg.eds_cluster_config.service_name or name
        elif discovery == "type" and msg.type in _INLINE_TYPES:
            kind = _INLINE_TYPES[msg.type]
            if not msg.HasField("load_assignment"):
                raise fail("load_assignment", f"is required for a {kind} cluster")
            inline = decode_load_assignment(msg.load_assignment, fail, "load_assignment.")
            if kind == "LOGICAL_DNS" and len(inline.endpoints()) != 1:
                raise fail("load_assignment", "a LOGICAL_DNS cluster needs exactly one endpoint")
        elif discovery == "cluster_type":
            kind = "AGGREGATE"
            children = decode_aggregate(msg, fail)
        else:
            kinds = cluster_pb2.Cluster.DiscoveryType
            what = (
                (kinds.Name(msg.type) if msg.type in kinds.values() else str(msg.type))
                if discovery == "type"
                else discovery
            )
            raise fail(
                "type",
                f"unsupported discovery type {what} (supported: EDS, STATIC, STRICT_DNS, "
                "LOGICAL_DNS, cluster_type envoy.clusters.aggregate)",
            )
        timeout = duration_seconds(msg, "connect_timeout")
        if timeout is not None and timeout <= 0:
            raise fail("connect_timeout", "must be positive")
        # An aggregate's children pick hosts with their own policies.
        lb = LbConfig() if kind == "AGGREGATE" else decode_lb_config(msg, fail)
        panic = 50.0
        common = msg.common_lb_config
        if common.HasField("healthy_panic_threshold"):
            panic = common.healthy_panic_threshold.value
            if not 0.0 <= panic <= 100.0:
                raise fail("common_lb_config.healthy_panic_threshold", f"must be 0-100: {panic}")
        tls = None
        if msg.HasField("transport_socket"):
            tls = decode_transport_socket(msg.transport_socket, "transport_socket", fail)
        elif msg.transport_socket_matches:
            tls = decode_transport_socket_matches(
                msg.transport_socket_matches, "transport_socket_matches", fail
            )
        protocol = decode_upstream_protocol(msg.typed_extension_protocol_options, fail)
        if protocol == "http1" and msg.HasField("http2_protocol_options"):
            protocol = "http2"  # the deprecated Cluster field
        return name, ClusterResource(
            name=name,
            eds_service_name=eds_name,
            lb_policy=lb.policy,
            connect_timeout=timeout if timeout is not None else 5.0,
            discovery_type=kind,
            load_assignment=inline,
            lb=lb,
            circuit_breakers=decode_circuit_breakers(msg, fail),
            outlier_detection=decode_outlier_detection(msg, fail),
            healthy_panic_threshold=panic,
            tls=tls,
            upstream_protocol=protocol,
            aggregate_clusters=children,
        )
