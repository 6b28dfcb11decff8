"""The admin endpoints under hostile queries, while the mesh serves load: every answer is a
2xx/4xx (never a 5xx, never a hang), the admin server keeps answering, and no mesh request
fails. The filter must be linear-time (RE2): with Python ``re`` a pathological
``/stats?filter=`` would hold the GIL and stall every request in the process, so the test
checks that first and never sends the pattern to a backtracking engine."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.httpx.mesh_xds import Upstream, mesh_resources, serving
from tests.httpx.servers import EchoApp
from tests.support import UvicornThread

from .load import Load, echo_ok

pytestmark = pytest.mark.chaos
HOST = "admin-chaos.test"
RUN = "a" * 40  # a cluster name on which (a+)+b backtracks 2^40 times in Python re
HOSTILE = [
    "/stats?filter=(",
    "/stats?filter=" + "x" * 60_000,
    "/stats?filter=%ff%fe",
    "/stats?filter=\\",
    "/stats?format=json&filter=[[:alpha:]",
    "/stats?format=" + "j" * 5000,
    "/config_dump?types=" + ",".join(["nope"] * 500),
    "/config_dump?types=%00",
    "/clusters?format=%ff",
    "/../../etc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/" + "a" * 20_000,
    "/stats?" + "&".join(f"k{i}=v" for i in range(3000)),
    "/xds?filter=(a+)+b",
    "/ready?x=" + "%" * 100,
]


World = tuple[Any, httpx.Client]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with UvicornThread(EchoApp()) as server:
        res = mesh_resources(HOST, {RUN: Upstream([server.port])}, [("/", RUN, {})])
        with (
            serving(tmp_path, res) as served,
            served.mesh() as mesh,
            mesh.admin() as admin,
            mesh.httpx_client(timeout=10) as client,
        ):
            assert client.get(f"http://{HOST}/echo/warm").status_code == 200
            yield admin, client


def _hostile_barrage(admin_url: str, queries: list[str]) -> dict[int, int]:
    statuses: dict[int, int] = {}
    with httpx.Client(timeout=20) as raw:
        for q in queries:
            try:
                status = raw.get(admin_url + q).status_code
            except httpx.RemoteProtocolError:  # the server closed a request it refused
                status = 0
            statuses[status] = statuses.get(status, 0) + 1
        assert raw.get(admin_url + "/healthz").status_code == 200
    return statuses


def test_hostile_admin_queries_under_load(world: World) -> None:
    admin, client = world

    send = echo_ok(client, HOST)

    result: dict[int, int] = {}
    with Load("hostile admin queries", send, max_requests=100_000) as load:
        load.wait_sent(200)
        for _ in range(3):
            for status, n in _hostile_barrage(admin.url, HOSTILE).items():
                result[status] = result.get(status, 0) + n
        figures = load.stop()
    figures.extra["admin_statuses"] = dict(sorted(result.items()))
    print(figures)
    assert figures.failed == 0, figures
    assert all(s == 0 or 200 <= s < 500 for s in result), figures


def _filter_is_linear(admin_url: str) -> bool:
    """RE2 refuses backreferences; Python re accepts them."""
    return httpx.get(admin_url + "/stats?filter=(a)\\1", timeout=10).status_code == 400


def test_pathological_stats_filter_does_not_stall_the_mesh(world: World) -> None:
    admin, client = world
    assert _filter_is_linear(admin.url), "/stats?filter= must be RE2 (refuse backreferences)"
    done = threading.Event()
    answer: list[int] = []

    def hostile() -> None:
        answer.append(httpx.get(admin.url + "/stats?filter=(a%2B)%2Bb", timeout=60).status_code)
        done.set()

    send = echo_ok(client, HOST)

    with Load("pathological /stats filter", send, max_requests=100_000) as load:
        load.wait_sent(100)
        threading.Thread(target=hostile, daemon=True).start()
        assert done.wait(60), "the admin server never answered"
        load.wait_sent(load.sent + 200)
        figures = load.stop()
    assert answer and answer[0] in (200, 400), (figures, answer)
    assert figures.failed == 0, figures
