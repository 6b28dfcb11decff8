"""One call through the whole mesh: control plane -> xDS -> Snapshot -> route -> pick -> httpx."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request

from meshlib import Mesh, MeshConnectError
from meshlib.controlplane import ControlPlane
from tests.support import UvicornThread, service_objects, write_config


def replica_app(replica: str) -> FastAPI:
    app = FastAPI()

    @app.get("/{path:path}")
    def echo(path: str, request: Request) -> dict[str, str]:
        return {"replica": replica, "host": request.headers["host"], "path": "/" + path}

    return app


@pytest.fixture
def backends() -> Iterator[list[UvicornThread]]:
    servers = [UvicornThread(replica_app(f"r{i}")).start() for i in range(3)]
    yield servers
    for s in servers:
        s.stop()


@pytest.fixture
def control_plane(tmp_path: Path, backends: list[UvicornThread]) -> Iterator[ControlPlane]:
    objects = service_objects("reviews", 9080, [("127.0.0.1", b.port) for b in backends])
    write_config(tmp_path / "config", objects)
    with ControlPlane(tmp_path / "config") as cp:
        yield cp


def test_300_requests_spread_evenly_over_3_replicas(control_plane: ControlPlane) -> None:
    node = "sidecar~127.0.0.1~client.default~default.svc.cluster.local"
    with (
        Mesh(bootstrap=control_plane.bootstrap(node_id=node)) as mesh,
        mesh.httpx_client(timeout=5) as client,
    ):
        counts: collections.Counter[str] = collections.Counter()
        for i in range(300):
            r = client.get(f"http://reviews.default.svc.cluster.local:9080/item/{i}")
            assert r.status_code == 200
            body = r.json()
            # The app's URL and Host header are kept; only the connection moves.
            assert body["host"] == "reviews.default.svc.cluster.local:9080"
            assert body["path"] == f"/item/{i}"
            assert str(r.request.url).startswith("http://reviews.default.svc.cluster.local:9080/")
            counts[body["replica"]] += 1
        assert set(counts) == {"r0", "r1", "r2"}
        assert all(99 <= n <= 101 for n in counts.values()), counts
        # Short names resolve in the node's namespace, and the default port applies.
        assert client.get("http://reviews:9080/").status_code == 200
    assert control_plane.nacks() == []


def test_unknown_hosts_pass_through_and_can_fail_closed(
    control_plane: ControlPlane, backends: list[UvicornThread]
) -> None:
    direct = f"http://127.0.0.1:{backends[0].port}/x"
    bootstrap = control_plane.bootstrap(
        node_id="sidecar~127.0.0.1~c2.default~default.svc.cluster.local"
    )
    with Mesh(bootstrap=bootstrap) as mesh, mesh.httpx_client(timeout=5) as client:
        assert client.get(direct).json()["replica"] == "r0"
    with Mesh(bootstrap=bootstrap, unknown_hosts="fail") as mesh, mesh.httpx_client() as client:
        with pytest.raises(MeshConnectError) as info:
            client.get(direct)
        assert isinstance(info.value, httpx.TransportError)
        assert info.value.reason == "listener_error"


def test_cluster_without_endpoints_is_no_healthy_upstream(tmp_path: Path) -> None:
    write_config(tmp_path / "cfg", service_objects("empty", 8000, []))
    with ControlPlane(tmp_path / "cfg") as cp, Mesh(bootstrap=cp.bootstrap()) as mesh:
        with mesh.httpx_client() as client:  # Envoy's local reply
            r = client.get("http://empty:8000/")
        assert (r.status_code, r.text) == (503, "no healthy upstream")
        reply = r.extensions["meshlib.local_reply"]
        assert (reply.reason, reply.flag) == ("no_healthy_upstream", "UH")
        assert reply.cluster == "outbound|8000||empty.default.svc.cluster.local"
