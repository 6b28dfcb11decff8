"""The control plane killed and restarted under load: no request fails while it is down
(the last good config keeps serving), and after the restart the client re-subscribes and
follows new pushes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from meshlib import Mesh
from meshlib.controlplane import ControlPlane
from tests.httpx.servers import EchoApp
from tests.support import UvicornThread

from .istio import route_reviews, write_reviews
from .load import Load, soak_seconds

pytestmark = pytest.mark.chaos


def run(tmp_path: Path, outages: int, down_for: float, name: str) -> None:
    apps = {v: EchoApp(v) for v in ("v1", "v2")}
    servers = {v: UvicornThread(app).start() for v, app in apps.items()}
    config = tmp_path / "config"
    write_reviews(config, {v: s.port for v, s in servers.items()})
    route_reviews(config, "v1")

    def control_plane(port: int = 0) -> ControlPlane:
        return ControlPlane(config, port=port, watch=True, poll_interval=0.02, debounce=0.05)

    cp = control_plane().start()
    port = cp.port
    try:
        with Mesh(cp.bootstrap()) as mesh, mesh.httpx_client(timeout=10) as client:
            seen: list[str] = []

            def send(i: int) -> bool:
                r = client.get("http://reviews:9080/echo")
                seen.append(r.headers.get("x-backend", ""))
                return r.status_code == 200

            with Load(name, send, threads=4, max_requests=2_000_000, max_seconds=900) as load:
                for outage in range(outages):
                    load.wait_sent(load.sent + 500)
                    cp.stop(grace=0)
                    time.sleep(down_for)  # down: requests keep flowing on the last config
                    cp = control_plane(port).start()
                    target = "v2" if outage % 2 == 0 else "v1"
                    route_reviews(config, target)  # a push after the restart
                    deadline = time.monotonic() + 30
                    while target not in seen[-20:] and time.monotonic() < deadline:
                        time.sleep(0.02)
                    assert target in seen[-20:], f"no push applied after restart {outage + 1}"
                load.wait_sent(load.sent + 500)
                figures = load.stop()
            figures.extra.update(outages=outages, down_s=down_for)
            assert figures.failed == 0, figures
    finally:
        cp.stop()
        for s in servers.values():
            s.stop()


def test_control_plane_killed_and_restarted_under_load(tmp_path: Path) -> None:
    run(tmp_path, outages=2, down_for=2.0, name="control plane killed 2x for 2 s")


@pytest.mark.soak
def test_soak_control_plane_outages(tmp_path: Path) -> None:
    if not os.environ.get("MESHLIB_SOAK"):
        pytest.skip("soak: run with make soak")
    outages = max(1, int(soak_seconds(90) // 15))
    run(tmp_path, outages=outages, down_for=10.0, name="soak: control plane outages of 10 s")
