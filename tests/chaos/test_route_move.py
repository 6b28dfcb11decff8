"""A route moves to a cluster the client has not resolved yet, under load: no request fails.

The client keeps serving the last settled route (as gRPC queues picks for a cluster whose
child policy is still connecting, gRFC A31/A28) until the new cluster and its endpoints
have arrived. Both the raw xDS shape (RouteConfiguration c1 -> c2) and Istio YAML (the
default route v1 -> v3) are checked.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.httpx.mesh_xds import Upstream, mesh_resources
from tests.httpx.servers import EchoApp
from tests.support import UvicornThread

from .istio import route_reviews, write_reviews
from .load import Load, mesh_client

pytestmark = pytest.mark.chaos
HOST = "move.test"
MOVES = 6


def test_route_moves_to_unresolved_clusters_under_load(tmp_path: Path) -> None:
    apps = [EchoApp(f"c{i}") for i in range(MOVES + 1)]
    servers = [UvicornThread(app).start() for app in apps]
    try:

        def resources(step: int):  # the route names c<step>; only c0..c<step> exist
            clusters = {f"c{i}": Upstream([servers[i].port]) for i in range(step + 1)}
            return mesh_resources(HOST, clusters, [("/", f"c{step}", {})])

        with mesh_client(tmp_path, resources(0)) as (served, client):
            seen: list[str] = []

            def send(i: int) -> bool:
                r = client.get(f"http://{HOST}/echo/{i}")
                seen.append(r.headers.get("x-backend", ""))
                return r.status_code == 200

            with Load("route moves c0->c6", send, threads=4, max_requests=20000) as load:
                for step in range(1, MOVES + 1):
                    load.wait_sent(load.sent + 300)
                    served.push(resources(step))
                    # the move is done when the new backend answers
                    deadline = time.monotonic() + 10
                    while f"c{step}" not in seen[-50:] and time.monotonic() < deadline:
                        time.sleep(0.01)
                load.wait_sent(load.sent + 300)
                figures = load.stop()
            figures.extra["moves"] = MOVES
            assert figures.failed == 0, figures
            assert seen[-1] == f"c{MOVES}", figures
            assert all(apps[i].hits for i in range(MOVES + 1)), figures
    finally:
        for s in servers:
            s.stop()


def test_istio_default_route_moves_v1_to_v3(tmp_path: Path) -> None:
    from meshlib import Mesh
    from meshlib.controlplane import ControlPlane

    apps = {v: EchoApp(v) for v in ("v1", "v2", "v3")}
    servers = {v: UvicornThread(app).start() for v, app in apps.items()}
    try:
        config = tmp_path / "config"
        write_reviews(config, {v: s.port for v, s in servers.items()})

        def route(v: str) -> None:
            route_reviews(config, v)

        route("v1")
        with (
            ControlPlane(config, watch=True, poll_interval=0.02, debounce=0.05) as cp,
            Mesh(cp.bootstrap()) as mesh,
            mesh.httpx_client(timeout=10) as client,
        ):
            seen: list[str] = []

            def send(i: int) -> bool:
                r = client.get("http://reviews:9080/echo")
                seen.append(r.headers.get("x-backend", ""))
                return r.status_code == 200

            with Load("istio route v1->v3->v1->v3", send, threads=4, max_requests=20000) as load:
                for v in ("v3", "v1", "v3"):
                    load.wait_sent(load.sent + 300)
                    route(v)
                    deadline = time.monotonic() + 10
                    while v not in seen[-50:] and time.monotonic() < deadline:
                        time.sleep(0.01)
                load.wait_sent(load.sent + 300)
                figures = load.stop()
            assert figures.failed == 0, figures
            assert seen[-1] == "v3" and apps["v3"].hits and not apps["v2"].hits, figures
    finally:
        for s in servers.values():
            s.stop()
