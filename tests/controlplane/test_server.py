"""The ADS server, driven over a real gRPC channel on loopback."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2

from meshlib.controlplane import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    ConfigError,
    ControlPlane,
)

from .conftest import RATINGS_YAML, AdsClient, write

REVIEWS = "reviews.default.svc.cluster.local:9080"
REVIEWS_CLUSTER = "outbound|9080||reviews.default.svc.cluster.local"
RATINGS_CLUSTER = "outbound|9090||ratings.default.svc.cluster.local"
Ads = Callable[..., AdsClient]


def _names(response: discovery_pb2.DiscoveryResponse, cls: type) -> list[str]:
    out = []
    for anyp in response.resources:
        msg = cls()
        assert anyp.Unpack(msg)
        out.append(msg.cluster_name if cls is endpoint_pb2.ClusterLoadAssignment else msg.name)
    return out


def test_lds_subscription_ack_and_nack(control_plane: ControlPlane, ads: Ads) -> None:
    client = ads("node-lds")
    client.send(LISTENER_TYPE, [REVIEWS])
    response = client.recv()
    assert response.type_url == LISTENER_TYPE
    assert response.version_info == "1"
    assert response.nonce
    assert _names(response, listener_pb2.Listener) == [REVIEWS]

    client.ack(response, [REVIEWS])
    event = control_plane.wait_for_ack("node-lds", LISTENER_TYPE, timeout=5)
    assert (event.version, event.nonce, event.error_detail) == ("1", response.nonce, None)
    client.assert_silent()  # an ACK needs no answer

    client.send(LISTENER_TYPE, [REVIEWS, "ratings:9090"], nonce=response.nonce, version="1")
    second = client.recv()
    assert sorted(_names(second, listener_pb2.Listener)) == ["ratings:9090", REVIEWS]
    assert second.nonce != response.nonce
    client.send(
        LISTENER_TYPE,
        [REVIEWS, "ratings:9090"],
        nonce=second.nonce,
        version="1",
        error="listener ratings:9090: bad filter",
    )
    deadline = time.monotonic() + 5
    while not control_plane.nacks("node-lds") and time.monotonic() < deadline:
        time.sleep(0.02)
    [nack] = control_plane.nacks("node-lds")
    assert (nack.node_id, nack.type_url, nack.nonce) == ("node-lds", LISTENER_TYPE, second.nonce)
    assert nack.error_detail == "listener ratings:9090: bad filter"
    assert [e.nonce for e in control_plane.acks("node-lds")] == [response.nonce]
    assert control_plane.nacks("someone-else") == []
    client.assert_silent()  # a NACK is not answered by resending the same thing


def test_all_four_types(control_plane: ControlPlane, ads: Ads) -> None:
    client = ads("node-all")
    client.send(LISTENER_TYPE, ["reviews:9080"])
    lds = client.recv()
    [listener] = _names(lds, listener_pb2.Listener)
    assert listener == "reviews:9080"
    client.ack(lds, ["reviews:9080"])

    client.send(ROUTE_TYPE, [REVIEWS_CLUSTER])
    rds = client.recv()
    assert rds.type_url == ROUTE_TYPE
    assert _names(rds, route_pb2.RouteConfiguration) == [REVIEWS_CLUSTER]
    client.ack(rds, [REVIEWS_CLUSTER])

    client.send(CLUSTER_TYPE)  # wildcard
    cds = client.recv()
    assert sorted(_names(cds, cluster_pb2.Cluster)) == [REVIEWS_CLUSTER, RATINGS_CLUSTER]
    client.ack(cds)

    client.send(ENDPOINT_TYPE, [REVIEWS_CLUSTER, "outbound|1||nothing.default.svc.cluster.local"])
    eds = client.recv()
    assert _names(eds, endpoint_pb2.ClusterLoadAssignment) == [REVIEWS_CLUSTER]
    cla = endpoint_pb2.ClusterLoadAssignment()
    eds.resources[0].Unpack(cla)
    ports = sorted(
        e.endpoint.address.socket_address.port_value
        for loc in cla.endpoints
        for e in loc.lb_endpoints
    )
    assert ports == [19081, 19082]
    client.ack(eds, [REVIEWS_CLUSTER])
    for type_url in (LISTENER_TYPE, ROUTE_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE):
        control_plane.wait_for_ack("node-all", type_url, timeout=5, version="1")
    assert control_plane.nacks() == []


def test_unknown_listener_gets_response_without_it(ads: Ads) -> None:
    client = ads("node-unknown")
    client.send(LISTENER_TYPE, ["nothing.default.svc.cluster.local:80"])
    response = client.recv()
    assert response.type_url == LISTENER_TYPE
    assert list(response.resources) == []
    # Unknown RDS/EDS names get no response at all (absence is not deletion there).
    client.send(ROUTE_TYPE, ["outbound|80||nothing.default.svc.cluster.local"])
    client.assert_silent()


def test_short_name_resolves_in_node_namespace(ads: Ads) -> None:
    other = ads("node-other", namespace="other")
    other.send(LISTENER_TYPE, ["reviews:9080", "reviews.default:9080"])
    assert _names(other.recv(), listener_pb2.Listener) == ["reviews.default:9080"]
    home = ads("node-home", namespace="default")
    home.send(LISTENER_TYPE, ["reviews:9080", "reviews.default:9080"])
    assert _names(home.recv(), listener_pb2.Listener) == ["reviews.default:9080", "reviews:9080"]


def test_reload_pushes_changes_in_order_and_ignores_stale_nonces(
    control_plane: ControlPlane, ads: Ads, config_dir: Path
) -> None:
    client = ads("node-push")
    subscriptions = {
        CLUSTER_TYPE: [],
        ENDPOINT_TYPE: [RATINGS_CLUSTER],
        LISTENER_TYPE: [],
        ROUTE_TYPE: [RATINGS_CLUSTER],
    }
    first: dict[str, discovery_pb2.DiscoveryResponse] = {}
    for type_url, names in subscriptions.items():
        client.send(type_url, names)
        first[type_url] = client.recv()
        assert first[type_url].type_url == type_url
        client.ack(first[type_url], names)
    client.assert_silent()

    # New endpoints for ratings and a new service: CDS, EDS and LDS change, RDS does not.
    write(config_dir / "ratings.yml", RATINGS_YAML.replace("29090", "29091"))
    write(
        config_dir / "details.yaml",
        """\
        apiVersion: v1
        kind: Service
        metadata: {name: details}
        spec: {ports: [{port: 9080}]}
        """,
    )
    assert control_plane.reload().version == "2"
    pushed = [client.recv(), client.recv(), client.recv()]
    assert [r.type_url for r in pushed] == [CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE]
    assert all(r.version_info == "2" for r in pushed)
    assert "outbound|9080||details.default.svc.cluster.local" in _names(
        pushed[0], cluster_pb2.Cluster
    )
    assert "details:9080" in _names(pushed[2], listener_pb2.Listener)  # wildcard, own namespace
    client.assert_silent()

    # An ACK carrying a nonce older than the last response is stale: ignored, not recorded.
    before = len(control_plane.acks("node-push"))
    client.ack(first[ENDPOINT_TYPE], subscriptions[ENDPOINT_TYPE])
    client.assert_silent()
    assert len(control_plane.acks("node-push")) == before
    for response in pushed:
        client.ack(response, subscriptions[response.type_url])
    event = control_plane.wait_for_ack("node-push", ENDPOINT_TYPE, timeout=5, version="2")
    assert event.nonce == pushed[1].nonce

    # Reloading unchanged files changes nothing and pushes nothing.
    assert control_plane.reload().version == "2"
    client.assert_silent()


def test_bad_reload_keeps_serving_last_good(
    control_plane: ControlPlane, ads: Ads, config_dir: Path
) -> None:
    write(
        config_dir / "ratings.yml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: ratings}\nspec: {ports: x}",
    )
    with pytest.raises(ConfigError, match=r"ratings\.yml: Service default/ratings: spec\.ports"):
        control_plane.reload()
    client = ads("node-bad")
    client.send(CLUSTER_TYPE)
    assert sorted(_names(client.recv(), cluster_pb2.Cluster)) == [
        REVIEWS_CLUSTER,
        RATINGS_CLUSTER,
    ]


def test_stop_ends_streams_cleanly(config_dir: Path) -> None:
    cp = ControlPlane(config_dir).start()
    client = AdsClient(cp.address, "node-stop")
    try:
        client.send(CLUSTER_TYPE)
        client.recv()
        started = time.monotonic()
        cp.stop()
        assert client.ended.wait(5)
        assert time.monotonic() - started < 5
        assert client.call.code() == grpc.StatusCode.OK
    finally:
        client.close()
        cp.stop()


def test_bad_config_fails_before_listening(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file or directory"):
        ControlPlane(tmp_path / "missing").start()


def test_bootstrap_points_at_server(control_plane: ControlPlane) -> None:
    boot = control_plane.bootstrap(namespace="shop", pod="web-0")
    assert boot == {
        "xds_servers": [
            {
                "server_uri": f"127.0.0.1:{control_plane.port}",
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"],
            }
        ],
        "node": {
            "id": "sidecar~127.0.0.1~web-0.shop~shop.svc.cluster.local",
            "metadata": {
                "GENERATOR": "grpc",
                "NAMESPACE": "shop",
                "INSTANCE_IPS": "127.0.0.1",
                "SERVICE_ACCOUNT": "default",
            },
            "locality": {},
        },
        # the same shape `meshlib bootstrap` writes (istio-agent's), without certificates
        "server_listener_resource_name_template": "xds.istio.io/grpc/lds/inbound/%s",
    }
    with_certs = control_plane.bootstrap(pod="web-0", cert_dir="/certs")
    provider = with_certs["certificate_providers"]["default"]
    assert provider["config"]["certificate_file"] == "/certs/cert-chain.pem"
    assert control_plane.address == f"127.0.0.1:{control_plane.port}"
    assert control_plane.port > 0
    assert control_plane.bootstrap()["node"]["id"] != control_plane.bootstrap()["node"]["id"]


def test_port_in_use_is_an_oserror(control_plane: ControlPlane, config_dir: Path) -> None:
    second = ControlPlane(config_dir, port=control_plane.port)
    with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{control_plane.port}"):
        second.start()
    second.stop()
