"""``meshlib proxy-status`` against the project's control plane over real gRPC: a
meshlib client that ACKs everything is SYNCED; a raw ADS stream that NACKs its clusters
shows NACKED with its error; the debug server is loopback only."""

from __future__ import annotations

import contextlib
import json
import queue
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from meshlib import Mesh
from meshlib.cli import main
from meshlib.controlplane import ControlPlane
from tests.support import service_objects, write_config

CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
NODE = "sidecar~127.0.0.1~productpage-1.default~default.svc.cluster.local"


class NackingClient:
    """A raw state-of-the-world ADS stream that refuses the clusters it is sent."""

    def __init__(self, address: str) -> None:
        self._channel = grpc.insecure_channel(address)
        self._requests: queue.Queue[discovery_pb2.DiscoveryRequest | None] = queue.Queue()
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self._channel)
        self._responses = stub.StreamAggregatedResources(iter(self._requests.get, None))

    def nack_clusters(self) -> None:
        first = discovery_pb2.DiscoveryRequest(type_url=CLUSTER_TYPE)
        first.node.id = "raw~nacker"
        first.node.metadata.fields["GENERATOR"].string_value = "grpc"
        self._requests.put(first)
        response = next(self._responses)
        nack = discovery_pb2.DiscoveryRequest(
            type_url=CLUSTER_TYPE, response_nonce=response.nonce, version_info=""
        )
        nack.error_detail.message = "cluster reviews: lb_policy MAGLEV is not supported here"
        self._requests.put(nack)

    def close(self) -> None:
        self._requests.put(None)
        self._channel.close()


@pytest.fixture
def control_plane(tmp_path: Path) -> Iterator[ControlPlane]:
    write_config(tmp_path / "config", service_objects("reviews", 9080, [("127.0.0.1", 9)]))
    with ControlPlane(tmp_path / "config") as cp:
        yield cp


def test_proxy_status_shows_synced_and_nacked_clients(
    control_plane: ControlPlane, capsys: pytest.CaptureFixture[str]
) -> None:
    nacker = NackingClient(control_plane.address)
    with (
        Mesh(bootstrap=control_plane.bootstrap(node_id=NODE)) as mesh,
        control_plane.debug_server() as debug,
    ):
        # the endpoint is closed: only the xDS state the call resolves matters here
        with mesh.httpx_client(timeout=2) as client, contextlib.suppress(httpx.HTTPError):
            client.get("http://reviews.default.svc.cluster.local:9080/")
        try:
            nacker.nack_clusters()
            control_plane.events.wait_for(lambda e: e.kind == "NACK", 10)
            control_plane.events.wait_for(
                lambda e: e.node_id == NODE and e.kind == "ACK" and "Route" in e.type_url, 10
            )
            assert main(["proxy-status", "--control-plane", debug.url]) == 0
            out = capsys.readouterr().out
            assert main(["proxy-status", "--control-plane", debug.url, "-o", "json"]) == 0
            doc = {c["node_id"]: c for c in json.loads(capsys.readouterr().out)}
        finally:
            nacker.close()
    print(out)
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "KIND", "PROTOCOL", "CDS", "LDS", "EDS", "RDS", "SDS"]
    mesh_row = next(r for r in rows if r.startswith(NODE))
    assert mesh_row.count("SYNCED") == 4 and "NOT SENT" in mesh_row  # no SDS asked
    nack_row = next(r for r in rows if r.startswith("raw~nacker"))
    assert "NACKED" in nack_row
    assert "raw~nacker NACKED Cluster version" in out and "MAGLEV is not supported" in out
    cds = doc["raw~nacker"]["types"][CLUSTER_TYPE]
    assert cds["status"] == "NACKED" and cds["acked"] == "" and cds["sent"]
    assert doc[NODE]["types"][CLUSTER_TYPE]["acked"] == doc[NODE]["types"][CLUSTER_TYPE]["sent"]


def test_debug_server_is_loopback_only(control_plane: ControlPlane) -> None:
    with pytest.raises(ValueError, match="loopback"):
        control_plane.debug_server(host="0.0.0.0")
    with control_plane.debug_server() as debug:
        assert httpx.get(debug.url + "/nope", timeout=5).status_code == 404
        assert httpx.post(debug.url + "/debug/syncz", timeout=5).status_code == 405


def test_unreachable_control_plane_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["proxy-status", "--control-plane", "http://127.0.0.1:9"]) == 1
    assert "cannot read http://127.0.0.1:9/debug/syncz" in capsys.readouterr().err
