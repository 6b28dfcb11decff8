"""Translation: Kubernetes objects -> xDS resources named like istiod's gRPC generator."""

from __future__ import annotations

from pathlib import Path

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import config_source_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from meshlib.controlplane import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    FileSource,
    MeshObjects,
    VersionedSnapshotCache,
    cluster_name,
    translate,
)

from .conftest import write

FQDN = "reviews.default.svc.cluster.local"
CLUSTER = "outbound|9080||reviews.default.svc.cluster.local"


def _load(tmp_path: Path, text: str) -> MeshObjects:
    return FileSource(write(tmp_path / "c.yaml", text)).load()


def _cla(objects: MeshObjects, name: str = CLUSTER) -> endpoint_pb2.ClusterLoadAssignment:
    return translate(objects).shared[ENDPOINT_TYPE][name]


def _endpoints(cla: endpoint_pb2.ClusterLoadAssignment) -> list[tuple[str, str, int, int]]:
    return [
        (
            loc.locality.zone,
            e.endpoint.address.socket_address.address,
            e.endpoint.address.socket_address.port_value,
            e.health_status,
        )
        for loc in cla.endpoints
        for e in loc.lb_endpoints
    ]


def test_resource_names(config_dir: Path) -> None:
    resources = translate(FileSource(config_dir).load())
    assert sorted(resources.shared[LISTENER_TYPE]) == [
        "ratings.default.svc.cluster.local:9090",
        "ratings.default.svc:9090",
        "ratings.default:9090",
        "reviews.default.svc.cluster.local:9080",
        "reviews.default.svc:9080",
        "reviews.default:9080",
        # server listeners, one per endpoint, as a gRPC xDS server asks for them
        "xds.istio.io/grpc/lds/inbound/127.0.0.1:19081",
        "xds.istio.io/grpc/lds/inbound/127.0.0.1:19082",
        "xds.istio.io/grpc/lds/inbound/127.0.0.2:29090",
    ]
    assert sorted(resources.by_namespace["default"][LISTENER_TYPE]) == [
        "ratings:9090",
        "reviews:9080",
    ]
    expected = [
        "outbound|9080||reviews.default.svc.cluster.local",
        "outbound|9090||ratings.default.svc.cluster.local",
    ]
    for type_url in (ROUTE_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE):
        assert sorted(resources.shared[type_url]) == expected
    assert cluster_name(9080, FQDN, "v1") == "outbound|9080|v1|reviews.default.svc.cluster.local"


def test_listener_is_api_listener_with_rds_over_ads(config_dir: Path) -> None:
    resources = translate(FileSource(config_dir).load())
    listeners = {
        **resources.shared[LISTENER_TYPE],
        **resources.by_namespace["default"][LISTENER_TYPE],
    }
    for name in (
        f"{FQDN}:9080",
        "reviews.default.svc:9080",
        "reviews.default:9080",
        "reviews:9080",
    ):
        listener = listeners[name]
        assert isinstance(listener, listener_pb2.Listener)
        assert listener.name == name
        hcm = hcm_pb2.HttpConnectionManager()
        assert listener.api_listener.api_listener.Unpack(hcm)
        assert hcm.rds.route_config_name == CLUSTER
        assert hcm.rds.config_source.WhichOneof("config_source_specifier") == "ads"
        assert hcm.rds.config_source.resource_api_version == config_source_pb2.V3
        assert [f.name for f in hcm.http_filters] == [
            "envoy.filters.http.fault",
            "envoy.filters.http.router",
        ]
        assert hcm.http_filters[1].typed_config.Is(router_pb2.Router.DESCRIPTOR)


def test_route_configuration(config_dir: Path) -> None:
    rc = translate(FileSource(config_dir).load()).shared[ROUTE_TYPE][CLUSTER]
    assert isinstance(rc, route_pb2.RouteConfiguration)
    assert rc.name == CLUSTER
    [vhost] = rc.virtual_hosts
    assert vhost.name == f"{FQDN}:9080"
    hosts = [FQDN, "reviews.default.svc", "reviews.default", "reviews", "10.96.0.20"]
    assert sorted(vhost.domains) == sorted(hosts + [f"{h}:9080" for h in hosts])
    [route] = vhost.routes
    assert route.match.prefix == "/"
    assert route.route.cluster == CLUSTER


def test_cluster(config_dir: Path) -> None:
    cluster = translate(FileSource(config_dir).load()).shared[CLUSTER_TYPE][CLUSTER]
    assert isinstance(cluster, cluster_pb2.Cluster)
    assert cluster.name == CLUSTER
    assert cluster.type == cluster_pb2.Cluster.EDS
    assert cluster.eds_cluster_config.service_name == CLUSTER
    assert cluster.eds_cluster_config.eds_config.HasField("ads")
    assert cluster.eds_cluster_config.eds_config.resource_api_version == config_source_pb2.V3
    assert cluster.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN
    assert cluster.connect_timeout.seconds == 10


def test_load_assignment_merges_slices(config_dir: Path) -> None:
    cla = _cla(FileSource(config_dir).load())
    assert cla.cluster_name == CLUSTER
    [locality] = cla.endpoints
    assert locality.HasField("locality")
    assert (locality.locality.region, locality.locality.zone) == ("", "zone-a")
    assert locality.load_balancing_weight.value == 2
    assert _endpoints(cla) == [
        ("zone-a", "127.0.0.1", 19081, health_check_pb2.HEALTHY),
        ("zone-a", "127.0.0.1", 19082, health_check_pb2.HEALTHY),
    ]
    assert all(e.load_balancing_weight.value == 1 for e in locality.lb_endpoints)


def test_load_assignment_conditions_zones_and_ports(tmp_path: Path) -> None:
    objects = _load(
        tmp_path,
        """\
        apiVersion: v1
        kind: Service
        metadata: {name: web, namespace: shop}
        spec:
          ports: [{name: http, port: 80}, {name: admin, port: 81}, {name: dns, port: 53,
                   protocol: UDP}]
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
        addressType: IPv4
        ports: [{name: admin, port: 9001}, {name: http, port: 8080}]
        endpoints:
        - {addresses: [10.0.0.1], zone: z1}
        - {addresses: [10.0.0.2], conditions: {ready: false}}
        - {addresses: [10.0.0.3], conditions: {ready: false, serving: true, terminating: true}}
        - {addresses: [10.0.0.4], conditions: {ready: false, serving: false, terminating: true}}
        - {addresses: [10.0.0.5, 10.0.0.6], zone: z2}
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: web-fqdn, namespace: shop, labels: {kubernetes.io/service-name: web}}
        addressType: FQDN
        ports: [{name: http, port: 8080}]
        endpoints: [{addresses: [web.example.com]}]
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: web-other-ns, namespace: other, labels: {kubernetes.io/service-name: web}}
        addressType: IPv4
        ports: [{name: http, port: 8080}]
        endpoints: [{addresses: [10.9.9.9]}]
        """,
    )
    http = _cla(objects, "outbound|80||web.shop.svc.cluster.local")
    assert _endpoints(http) == [
        ("", "10.0.0.3", 8080, health_check_pb2.DRAINING),
        ("z1", "10.0.0.1", 8080, health_check_pb2.HEALTHY),
        ("z2", "10.0.0.5", 8080, health_check_pb2.HEALTHY),
        ("z2", "10.0.0.6", 8080, health_check_pb2.HEALTHY),
    ]
    assert [loc.load_balancing_weight.value for loc in http.endpoints] == [1, 1, 2]
    admin = _cla(objects, "outbound|81||web.shop.svc.cluster.local")
    assert {e[2] for e in _endpoints(admin)} == {9001}
    resources = translate(objects)
    assert "outbound|53||web.shop.svc.cluster.local" not in resources.shared[CLUSTER_TYPE]
    assert "web:53" not in resources.by_namespace["shop"][LISTENER_TYPE]


def test_unnamed_port_uses_only_slice_port_or_target_port(tmp_path: Path) -> None:
    objects = _load(
        tmp_path,
        """\
        apiVersion: v1
        kind: Service
        metadata: {name: a}
        spec: {ports: [{port: 80, targetPort: 8080}]}
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: a-1, labels: {kubernetes.io/service-name: a}}
        addressType: IPv4
        ports: [{port: 7000}]
        endpoints: [{addresses: [10.0.0.1]}]
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: a-2, labels: {kubernetes.io/service-name: a}}
        addressType: IPv4
        endpoints: [{addresses: [10.0.0.2]}]
        """,
    )
    cla = _cla(objects, "outbound|80||a.default.svc.cluster.local")
    assert [(e[1], e[2]) for e in _endpoints(cla)] == [("10.0.0.1", 7000), ("10.0.0.2", 8080)]


def test_service_without_endpoints_has_empty_assignment(tmp_path: Path) -> None:
    objects = _load(
        tmp_path, "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}"
    )
    cla = _cla(objects, "outbound|80||a.default.svc.cluster.local")
    assert cla.cluster_name == "outbound|80||a.default.svc.cluster.local"
    assert list(cla.endpoints) == []


def test_snapshot_serves_short_names_per_namespace(config_dir: Path) -> None:
    cache = VersionedSnapshotCache()
    snapshot = cache.set_resources(translate(FileSource(config_dir).load()))
    assert "reviews:9080" in snapshot.resources(LISTENER_TYPE, "default")
    assert "reviews:9080" not in snapshot.resources(LISTENER_TYPE, "other")
    assert f"{FQDN}:9080" in snapshot.resources(LISTENER_TYPE, "other")
    assert snapshot.type_urls() == [CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE]
    packed = snapshot.resources(LISTENER_TYPE, "default")["reviews:9080"]
    assert packed.type_url == LISTENER_TYPE
