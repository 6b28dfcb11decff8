"""DestinationRule -> clusters and endpoints: subsets and every traffic-policy field."""

from __future__ import annotations

from pathlib import Path

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo_pb2

from meshlib.controlplane import CLUSTER_TYPE, ENDPOINT_TYPE, ConfigError, NodeView

from .istio_support import REVIEWS, SUBSETS, cluster, cluster_of, endpoints, load, routes, view


def dr(policy: str = "", subsets: str = "") -> str:
    out = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
    out += "metadata: {name: reviews}\nspec:\n  host: reviews\n"
    if policy:
        out += "  trafficPolicy:\n" + "".join(f"    {ln}\n" for ln in policy.strip().splitlines())
    if subsets:
        out += "  subsets:\n" + "".join(f"  {ln}\n" for ln in subsets.strip().splitlines())
    return out


def test_subsets_get_their_own_clusters_and_endpoints(tmp_path: Path) -> None:
    res = load(tmp_path, SUBSETS)
    assert sorted(res.shared[CLUSTER_TYPE]) == sorted(
        [cluster_of(s) for s in ("", "v1", "v2", "v3")]
        + ["outbound|9080||ratings.default.svc.cluster.local"]
    )
    assert endpoints(res, cluster_of("")) == [("127.0.0.1", p) for p in (19001, 19002, 19003)]
    assert endpoints(res, cluster_of("v2")) == [("127.0.0.1", 19002)]
    c = cluster(res, cluster_of("v2"))
    assert c.type == cluster_pb2.Cluster.EDS
    assert c.eds_cluster_config.service_name == cluster_of("v2")
    assert c.alt_stat_name == cluster_of("v2") + ";"


def test_default_cluster_has_full_thresholds_and_no_outlier_detection(tmp_path: Path) -> None:
    c = cluster(load(tmp_path), cluster_of())
    (t,) = c.circuit_breakers.thresholds
    assert [
        t.max_connections.value,
        t.max_pending_requests.value,
        t.max_requests.value,
        t.max_retries.value,
    ] == [2**32 - 1] * 4
    assert not c.HasField("outlier_detection")
    assert c.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN
    assert not c.HasField("transport_socket")


@pytest.mark.parametrize(
    ("simple", "expected"),
    [
        ("ROUND_ROBIN", cluster_pb2.Cluster.ROUND_ROBIN),
        ("LEAST_REQUEST", cluster_pb2.Cluster.LEAST_REQUEST),
        ("RANDOM", cluster_pb2.Cluster.RANDOM),
    ],
)
def test_simple_load_balancer(tmp_path: Path, simple: str, expected: int) -> None:
    res = load(tmp_path, dr(f"loadBalancer: {{simple: {simple}}}"))
    assert cluster(res, cluster_of()).lb_policy == expected


def test_grpcio_view_maps_policies_it_rejects(tmp_path: Path) -> None:
    res = load(tmp_path, dr("loadBalancer: {simple: LEAST_REQUEST}"))
    grpc_view = view(res, CLUSTER_TYPE, NodeView(kind="grpc"))
    assert grpc_view[cluster_of()].lb_policy == cluster_pb2.Cluster.ROUND_ROBIN
    meshlib_view = view(res, CLUSTER_TYPE, NodeView(kind="meshlib"))
    assert meshlib_view[cluster_of()].lb_policy == cluster_pb2.Cluster.LEAST_REQUEST


@pytest.mark.parametrize(
    ("hash_yaml", "check"),
    [
        ("httpHeaderName: X-User", lambda hp: hp.header.header_name == "x-user"),
        (
            "httpCookie: {name: session, path: /, ttl: 10s}",
            lambda hp: (
                (hp.cookie.name, hp.cookie.path, hp.cookie.ttl.seconds) == ("session", "/", 10)
            ),
        ),
        ("useSourceIp: true", lambda hp: hp.connection_properties.source_ip),
        ("httpQueryParameterName: user", lambda hp: hp.query_parameter.name == "user"),
    ],
)
def test_consistent_hash_keys(tmp_path: Path, hash_yaml: str, check: object) -> None:
    res = load(tmp_path, dr(f"loadBalancer:\n  consistentHash: {{{hash_yaml}}}"))
    c = cluster(res, cluster_of())
    assert c.lb_policy == cluster_pb2.Cluster.RING_HASH
    (hp,) = routes(res)[0].route.hash_policy
    assert callable(check) and check(hp)


def test_ring_hash_and_maglev_sizes(tmp_path: Path) -> None:
    res = load(
        tmp_path,
        dr(
            "loadBalancer:\n  consistentHash:\n"
            "    {httpHeaderName: x, ringHash: {minimumRingSize: 2048}}"
        ),
    )
    assert cluster(res, cluster_of()).ring_hash_lb_config.minimum_ring_size.value == 2048
    res = load(
        tmp_path, dr("loadBalancer:\n  consistentHash: {httpHeaderName: x, maglev: {tableSize: 7}}")
    )
    c = cluster(res, cluster_of())
    assert c.lb_policy == cluster_pb2.Cluster.MAGLEV
    assert c.maglev_lb_config.table_size.value == 7
    grpc_view = view(res, CLUSTER_TYPE, NodeView(kind="grpc"))
    assert grpc_view[cluster_of()].lb_policy == cluster_pb2.Cluster.RING_HASH
    assert grpc_view[cluster_of()].WhichOneof("lb_config") is None  # no MAGLEV settings


def test_grpcio_view_keeps_a_least_request_warmup_on_round_robin(tmp_path: Path) -> None:
    res = load(tmp_path, dr("loadBalancer: {simple: LEAST_REQUEST, warmupDurationSecs: 5s}"))
    grpc_cluster = view(res, CLUSTER_TYPE, NodeView(kind="grpc"))[cluster_of()]
    assert grpc_cluster.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN
    assert grpc_cluster.WhichOneof("lb_config") == "round_robin_lb_config"
    assert grpc_cluster.round_robin_lb_config.slow_start_config.slow_start_window.seconds == 5
    plain = load(tmp_path, dr("loadBalancer: {simple: LEAST_REQUEST}"))
    grpc_plain = view(plain, CLUSTER_TYPE, NodeView(kind="grpc"))[cluster_of()]
    assert grpc_plain.WhichOneof("lb_config") is None


def test_connection_pool(tmp_path: Path) -> None:
    res = load(
        tmp_path,
        dr(
            """
connectionPool:
  tcp: {maxConnections: 7, connectTimeout: 250ms}
  http: {http1MaxPendingRequests: 3, http2MaxRequests: 11, maxRetries: 2,
         maxRequestsPerConnection: 5, idleTimeout: 30s}
"""
        ),
    )
    c = cluster(res, cluster_of())
    (t,) = c.circuit_breakers.thresholds
    assert [
        t.max_connections.value,
        t.max_pending_requests.value,
        t.max_requests.value,
        t.max_retries.value,
    ] == [7, 3, 11, 2]
    assert c.connect_timeout.ToMilliseconds() == 250
    opts = hpo_pb2.HttpProtocolOptions()
    assert c.typed_extension_protocol_options[
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ].Unpack(opts)
    assert opts.common_http_protocol_options.max_requests_per_connection.value == 5
    assert opts.common_http_protocol_options.idle_timeout.seconds == 30


def test_outlier_detection(tmp_path: Path) -> None:
    res = load(
        tmp_path,
        dr(
            """
outlierDetection: {consecutive5xxErrors: 3, consecutiveGatewayErrors: 2, interval: 5s,
                   baseEjectionTime: 1m, maxEjectionPercent: 50, minHealthPercent: 20}
"""
        ),
    )
    c = cluster(res, cluster_of())
    od = c.outlier_detection
    assert (od.consecutive_5xx.value, od.enforcing_consecutive_5xx.value) == (3, 100)
    assert (
        od.consecutive_gateway_failure.value,
        od.enforcing_consecutive_gateway_failure.value,
    ) == (
        2,
        100,
    )
    assert od.interval.seconds == 5
    assert od.base_ejection_time.seconds == 60
    assert od.max_ejection_percent.value == 50
    assert od.enforcing_success_rate.value == 0
    assert c.common_lb_config.healthy_panic_threshold.value == 20


def test_port_level_and_subset_policies_override_by_section(tmp_path: Path) -> None:
    res = load(
        tmp_path,
        dr(
            """
loadBalancer: {simple: RANDOM}
connectionPool: {tcp: {maxConnections: 10}}
portLevelSettings:
- port: {number: 9080}
  loadBalancer: {simple: LEAST_REQUEST}
""",
            """
- name: v1
  labels: {version: v1}
  trafficPolicy:
    connectionPool: {tcp: {maxConnections: 1}}
- {name: v2, labels: {version: v2}}
""",
        ),
    )
    default = cluster(res, cluster_of())
    v1 = cluster(res, cluster_of("v1"))
    v2 = cluster(res, cluster_of("v2"))
    assert default.lb_policy == v1.lb_policy == v2.lb_policy == cluster_pb2.Cluster.LEAST_REQUEST
    assert default.circuit_breakers.thresholds[0].max_connections.value == 10
    assert v1.circuit_breakers.thresholds[0].max_connections.value == 1
    assert v2.circuit_breakers.thresholds[0].max_connections.value == 10


def _tls(c: cluster_pb2.Cluster) -> tls_pb2.UpstreamTlsContext:
    ctx = tls_pb2.UpstreamTlsContext()
    assert c.transport_socket.name == "envoy.transport_sockets.tls"
    assert c.transport_socket.typed_config.Unpack(ctx)
    return ctx


def test_tls_istio_mutual_proxyless_uses_certificate_providers(tmp_path: Path) -> None:
    res = load(tmp_path, dr("tls: {mode: ISTIO_MUTUAL}"))
    ctx = _tls(cluster(res, cluster_of()))
    common = ctx.common_tls_context
    assert common.tls_certificate_provider_instance.instance_name == "default"
    assert common.tls_certificate_certificate_provider_instance.certificate_name == "default"
    combined = common.combined_validation_context
    assert combined.validation_context_certificate_provider_instance.certificate_name == "ROOTCA"
    assert (
        combined.default_validation_context.ca_certificate_provider_instance.certificate_name
        == "ROOTCA"
    )
    assert ctx.sni == f"outbound_.9080_._.{REVIEWS}"


def test_tls_istio_mutual_envoy_uses_sds(tmp_path: Path) -> None:
    res = load(tmp_path, dr("tls: {mode: ISTIO_MUTUAL}"))
    c = view(res, CLUSTER_TYPE, NodeView(kind="envoy"))[cluster_of()]
    common = _tls(c).common_tls_context
    assert [s.name for s in common.tls_certificate_sds_secret_configs] == ["default"]
    sds = common.combined_validation_context.validation_context_sds_secret_config
    assert sds.name == "ROOTCA"
    assert sds.sds_config.HasField("ads")


def test_tls_simple_mutual_and_disable(tmp_path: Path) -> None:
    res = load(
        tmp_path,
        dr(
            "tls: {mode: SIMPLE, caCertificates: /etc/ca.pem, sni: r.example, "
            "subjectAltNames: [r.example]}",
            """
- name: v1
  labels: {version: v1}
  trafficPolicy:
    tls: {mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem, caCertificates: /ca.pem}
- name: v2
  labels: {version: v2}
  trafficPolicy: {tls: {mode: DISABLE}}
""",
        ),
    )
    simple = _tls(cluster(res, cluster_of()))
    vc = simple.common_tls_context.validation_context
    assert vc.trusted_ca.filename == "/etc/ca.pem"
    assert [m.exact for m in vc.match_subject_alt_names] == ["r.example"]
    assert simple.sni == "r.example"
    assert not simple.common_tls_context.tls_certificates
    mutual = _tls(cluster(res, cluster_of("v1")))
    (cert,) = mutual.common_tls_context.tls_certificates
    assert (cert.certificate_chain.filename, cert.private_key.filename) == ("/c.pem", "/k.pem")
    assert not cluster(res, cluster_of("v2")).HasField("transport_socket")


def test_locality_failover_priorities_per_client_locality(tmp_path: Path) -> None:
    res = load(
        tmp_path,
        dr("outlierDetection: {consecutive5xxErrors: 1}\nloadBalancer: {localityLbSetting: {}}"),
    )
    near_zone2 = NodeView(locality=("", "zone-2", ""))
    cla: endpoint_pb2.ClusterLoadAssignment = view(res, ENDPOINT_TYPE, near_zone2)[cluster_of()]
    prio = {loc.locality.zone: loc.priority for loc in cla.endpoints}
    assert prio == {"zone-1": 1, "zone-2": 0, "zone-3": 1}
    no_locality = view(res, ENDPOINT_TYPE)[cluster_of()]
    assert {loc.priority for loc in no_locality.endpoints} == {0}


def test_locality_distribute_sets_weights(tmp_path: Path) -> None:
    res = load(
        tmp_path,
        dr(
            """
loadBalancer:
  localityLbSetting:
    distribute:
    - from: "*"
      to: {"/zone-1": 80, "/zone-3": 20}
"""
        ),
    )
    assert cluster(res, cluster_of()).common_lb_config.HasField("locality_weighted_lb_config")
    cla = view(res, ENDPOINT_TYPE, NodeView(locality=("", "zone-2", "")))[cluster_of()]
    weights = {loc.locality.zone: loc.load_balancing_weight.value for loc in cla.endpoints}
    assert weights == {"zone-1": 80, "zone-3": 20}


@pytest.mark.parametrize(
    ("policy", "error"),
    [
        ("loadBalancer: {simple: FASTEST}", r"trafficPolicy\.loadBalancer\.simple: 'FASTEST'"),
        (
            "loadBalancer: {consistentHash: {}}",
            r"trafficPolicy\.loadBalancer\.consistentHash: must set exactly one",
        ),
        (
            "outlierDetection: {interval: 0s}",
            r"trafficPolicy\.outlierDetection\.interval: must be positive",
        ),
        ("tls: {mode: MUTUAL}", r"trafficPolicy\.tls: MUTUAL needs clientCertificate"),
        (
            "connectionPool: {tcp: {maxConnections: -1}}",
            r"trafficPolicy\.connectionPool\.tcp\.maxConnections: must be an integer",
        ),
    ],
)
def test_bad_destination_rule_names_the_field(tmp_path: Path, policy: str, error: str) -> None:
    with pytest.raises(ConfigError, match=rf"DestinationRule default/reviews: spec\.{error}"):
        load(tmp_path, dr(policy))


def test_duplicate_subset_is_rejected(tmp_path: Path) -> None:
    subsets = "- {name: v1, labels: {version: v1}}\n- {name: v1, labels: {version: v2}}"
    with pytest.raises(ConfigError, match=r"spec\.subsets\[1\]\.name: duplicate subset 'v1'"):
        load(tmp_path, dr("", subsets))
