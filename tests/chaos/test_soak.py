"""Soak (``make soak`` only): sustained load through the mesh, RSS growth per 100k
requests reported and bounded; MESHLIB_SOAK_SECONDS sets the length (default 90)."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest

from tests.httpx.mesh_xds import Upstream, mesh_resources
from tests.httpx.servers import EchoApp
from tests.support import UvicornThread

from .load import Load, mesh_client, soak_seconds

pytestmark = [pytest.mark.chaos, pytest.mark.soak]
HOST = "soak.test"
MAX_GROWTH_MB_PER_100K = 5.0


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def test_soak_rss_growth(tmp_path: Path) -> None:
    if not os.environ.get("MESHLIB_SOAK"):
        pytest.skip("soak: run with make soak")
    seconds = soak_seconds(90)
    with UvicornThread(EchoApp("a")) as a, UvicornThread(EchoApp("b")) as b:
        res = mesh_resources(HOST, {"c": Upstream([a.port, b.port])}, [("/", "c", {})])
        with mesh_client(tmp_path, res) as (_served, client):

            def send(i: int) -> bool:
                return client.get(f"http://{HOST}/echo/{i % 1000}").status_code == 200

            with Load("soak warm-up", send, max_requests=5000):
                pass
            gc.collect()
            before = _rss_mb()
            with Load("soak", send, max_requests=10_000_000, max_seconds=seconds) as load:
                pass
            gc.collect()
            after = _rss_mb()
    figures = load.figures
    per_100k = (after - before) / max(figures.sent, 1) * 100_000
    figures.extra.update(rss_before_mb=round(before, 1), rss_after_mb=round(after, 1))
    figures.extra["rss_growth_mb_per_100k"] = round(per_100k, 2)
    print(figures)
    assert figures.failed == 0, figures
    assert per_100k < MAX_GROWTH_MB_PER_100K, figures
