"""The admin endpoints against a live Mesh that has carried real traffic."""

from __future__ import annotations

import grpc
import httpx
import pytest
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc

from meshlib import Call, Mesh, MeshConnectError
from meshlib._outcome import Outcome, OutcomeKind
from meshlib.admin import AdminServer
from meshlib.telemetry import Telemetry
from tests.admin.conftest import CLUSTER, REQUESTS, Live

DUMP_TYPES = [
    "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
    "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
    "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
    "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
]


def get(live: Live, path: str) -> httpx.Response:
    return httpx.get(live.admin.url + path, timeout=10)


def test_health_and_readiness(live: Live) -> None:
    assert get(live, "/healthz").text == "OK\n"
    ready = get(live, "/ready")
    assert (ready.status_code, ready.text) == (200, "LIVE\n")
    missing = get(live, "/nope")
    assert missing.status_code == 404 and "/help" in missing.text
    assert "/config_dump" in get(live, "/help").text


def test_clusters_text_and_json_count_the_traffic(live: Live) -> None:
    text = get(live, "/clusters").text
    per_host = REQUESTS // len(live.addresses)  # round robin
    for address in live.addresses:
        assert f"{CLUSTER}::{address}::rq_total::{per_host}\n" in text
        assert f"{CLUSTER}::{address}::rq_error::0\n" in text
        assert f"{CLUSTER}::{address}::health_flags::healthy\n" in text
        assert f"{CLUSTER}::{address}::success_rate::100.0\n" in text
    assert f"{CLUSTER}::default_priority::max_requests::" in text
    doc = get(live, "/clusters?format=json").json()
    (cluster,) = doc["cluster_statuses"]
    assert cluster["name"] == CLUSTER
    assert (cluster["rq_total"], cluster["rq_active"], cluster["rq_error"]) == (REQUESTS, 0, 0)
    assert cluster["success_rate"] == 100.0
    assert cluster["healthy"] == 3
    assert cluster["lb_policy"] == "ROUND_ROBIN"
    assert cluster["circuit_breakers"]["open"] is False
    hosts = {h["hostname"]: h for h in cluster["host_statuses"]}
    assert sorted(hosts) == sorted(live.addresses)
    for h in hosts.values():
        assert h["rq_total"] == per_host
        assert h["latency_ewma_ms"] > 0
        assert h["health_status"] == {"eds_health_status": "HEALTHY", "failed_outlier_check": False}
        assert h["address"]["socket_address"]["address"] == "127.0.0.1"


def test_stats_and_prometheus(live: Live) -> None:
    stats = get(live, "/stats").text
    assert f"cluster.{CLUSTER};.upstream_rq_total: {REQUESTS}\n" in stats
    assert f"cluster.{CLUSTER};.membership_healthy: 3\n" in stats
    filtered = get(live, "/stats?filter=membership_total").text.splitlines()
    assert filtered == [f"cluster.{CLUSTER};.membership_total: 3"]
    as_json = get(live, "/stats?format=json&filter=upstream_rq_total").json()
    assert {"name": f"cluster.{CLUSTER};.upstream_rq_total", "value": str(REQUESTS)} in as_json[
        "stats"
    ]
    assert get(live, "/stats?filter=(").status_code == 400
    prom = get(live, "/stats/prometheus")
    assert prom.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert f'envoy_cluster_upstream_rq_total{{cluster_name="{CLUSTER}"}} {REQUESTS}\n' in prom.text
    assert "# TYPE envoy_cluster_upstream_rq_total counter" in prom.text


def test_stats_include_what_the_telemetry_seam_records(live: Live) -> None:
    call = Call("reviews.default.svc.cluster.local:9080", "GET", "/reviews/x")
    rec = live.telemetry.start_call(call)
    rec.route("default", CLUSTER)
    rec.attempt(live.addresses[0], CLUSTER).end(Outcome(OutcomeKind.RESPONSE, status=200))
    rec.end(status=200)
    prom = get(live, "/stats/prometheus").text
    line = next(ln for ln in prom.splitlines() if ln.startswith("istio_requests_total{"))
    assert 'destination_service_name="reviews"' in line and 'response_code="200"' in line
    assert (
        f'meshlib_upstream_rq_time_count{{cluster="{CLUSTER}",endpoint="{live.addresses[0]}"}} 1'
        in prom
    )
    host = next(
        h
        for h in get(live, "/clusters?format=json").json()["cluster_statuses"][0]["host_statuses"]
        if h["hostname"] == live.addresses[0]
    )
    assert host["latency_p99_ms"] is not None
    # this mesh's outbound calls (inbound, reporter=destination, is process-wide)
    stats = get(live, "/stats?filter=^istio_requests_total%5C%7Breporter%3Dsource").text
    assert stats.count("\n") == 1 and stats.rstrip().endswith(": 1")


def test_config_dump_has_envoys_shape(live: Live) -> None:
    dump = get(live, "/config_dump").json()
    assert [c["@type"] for c in dump["configs"]] == DUMP_TYPES
    listeners, routes, clusters, endpoints = dump["configs"]
    (listener,) = listeners["dynamic_listeners"]
    assert listener["name"] == "reviews.default.svc.cluster.local:9080"
    assert listener["client_status"] == "ACKED"
    state = listener["active_state"]
    assert state["listener"]["@type"] == "type.googleapis.com/envoy.config.listener.v3.Listener"
    hcm = state["listener"]["api_listener"]["api_listener"]
    assert hcm["rds"]["route_config_name"] == CLUSTER
    (route,) = routes["dynamic_route_configs"]
    assert route["route_config"]["name"] == CLUSTER and route["client_status"] == "ACKED"
    (cluster,) = clusters["dynamic_active_clusters"]
    assert cluster["cluster"]["name"] == CLUSTER and cluster["version_info"]
    (cla,) = endpoints["dynamic_endpoint_configs"]
    ports = {
        lb["endpoint"]["address"]["socket_address"]["port_value"]
        for loc in cla["endpoint_config"]["endpoints"]
        for lb in loc["lb_endpoints"]
    }
    assert ports == {b.port for b in live.backends}
    only = get(live, "/config_dump?types=clusters,routes").json()
    assert [c["@type"] for c in only["configs"]] == DUMP_TYPES[1:3]
    bad = get(live, "/config_dump?types=secrets")
    assert bad.status_code == 400 and "secrets" in bad.text


def test_xds_status(live: Live) -> None:
    doc = get(live, "/xds").json()
    assert doc["connected"] is True
    assert doc["counts"] == {"ACKED": 4}
    assert doc["node"].startswith("sidecar~127.0.0.1~productpage-1")
    assert {r["type"] for r in doc["resources"]} == {
        "Listener",
        "RouteConfiguration",
        "Cluster",
        "ClusterLoadAssignment",
    }


def test_csds_over_grpc(live: Live) -> None:
    with grpc.insecure_channel(live.admin.grpc_address) as channel:
        stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)
        response = stub.FetchClientStatus(csds_pb2.ClientStatusRequest(), timeout=10)
    (config,) = response.config
    names = {c.name for c in config.generic_xds_configs}
    assert "reviews.default.svc.cluster.local:9080" in names
    assert {c.config_status for c in config.generic_xds_configs} == {csds_pb2.SYNCED}


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "BREW"])
def test_every_method_but_get_is_refused(live: Live, method: str) -> None:
    r = httpx.request(method, live.admin.url + "/stats", content=b"x=1", timeout=10)
    assert r.status_code == 405
    assert r.headers["allow"] == "GET"


def test_only_loopback_unless_allowed(live: Live) -> None:
    with pytest.raises(ValueError, match="not a loopback address"):
        AdminServer(live.mesh, host="0.0.0.0")
    with pytest.raises(ValueError, match="port must be"):
        AdminServer(live.mesh, port=70000)
    AdminServer(live.mesh, host="0.0.0.0", allow_remote=True)  # constructed, never bound
    with AdminServer(live.mesh, host="::1") as v6:
        assert v6.url.startswith("http://[::1]:")
        assert httpx.get(v6.url + "/healthz", timeout=10).text == "OK\n"


def test_not_ready_while_a_target_is_unresolved() -> None:
    bootstrap = {
        "xds_servers": [{"server_uri": "127.0.0.1:1", "channel_creds": [{"type": "insecure"}]}],
        "node": {"id": "sidecar~127.0.0.1~lonely.default~default.svc.cluster.local"},
    }
    with Mesh(bootstrap=bootstrap, resolve_timeout=0.2) as mesh, AdminServer(mesh) as admin:
        assert httpx.get(admin.url + "/ready", timeout=10).status_code == 200  # nothing asked
        with mesh.httpx_client() as client, pytest.raises(MeshConnectError):
            client.get("http://ratings:9080/")
        ready = httpx.get(admin.url + "/ready", timeout=10)
        assert ready.status_code == 503 and "ratings:9080" in ready.text
        xds = httpx.get(admin.url + "/xds", timeout=10).json()
        assert xds["counts"] == {"REQUESTED": 1}
        # Once the xDS client reports its stream state through the seam, /xds follows it.
        with AdminServer(mesh, telemetry=Telemetry()) as reported:
            reported_doc = httpx.get(reported.url + "/xds", timeout=10).json()
            assert reported_doc["reported_state"] == "unknown"
            reported.telemetry.xds_connection("disconnected")  # type: ignore[union-attr]
            reported_doc = httpx.get(reported.url + "/xds", timeout=10).json()
            assert reported_doc["connected"] is False
