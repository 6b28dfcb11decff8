"""A backend killed in the middle of 2,000 requests: with retries on, no idempotent
request fails (async, 20 in flight; sync, 4 threads). (The seed of the chaos suite.)"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from meshlib import Mesh
from tests.httpx.mesh_xds import RETRY_ALL, Upstream, mesh_resources, serving
from tests.httpx.servers import EchoApp
from tests.support import UvicornThread

HOST = "chaos.test"
TOTAL = 2000
KILL_AFTER = 300
pytestmark = pytest.mark.chaos


def report(name: str, statuses: list[int], failures: list[BaseException], start: float) -> str:
    line = (
        f"[chaos] {name}: {len(statuses) + len(failures)} sent, "
        f"{len(failures) + sum(s != 200 for s in statuses)} failed, "
        f"{time.monotonic() - start:.2f} s"
    )
    print(line, flush=True)
    return line


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Mesh, UvicornThread, EchoApp]]:
    survivor, victim = EchoApp("survivor"), EchoApp("victim")
    with UvicornThread(survivor) as a:
        b = UvicornThread(victim).start()
        # istiod's default max_retries is 2^32-1; Envoy's 3 would refuse concurrent retries
        thresholds = {"thresholds": [{"max_retries": 4294967295}]}
        clusters = {"svc": Upstream([a.port, b.port], extra={"circuit_breakers": thresholds})}
        res = mesh_resources(HOST, clusters, [("/", "svc", {"retry_policy": RETRY_ALL})])
        try:
            with serving(tmp_path, res) as served, served.mesh() as mesh:
                yield mesh, b, victim
        finally:
            b.stop()


def kill(server: UvicornThread) -> None:
    """Stop at once: listener closed, open connections dropped."""
    server.server.should_exit = True
    server.server.force_exit = True
    server.thread.join(timeout=10)


def test_async_backend_killed_mid_load(world: tuple[Mesh, UvicornThread, EchoApp]) -> None:
    mesh, victim_server, victim = world
    failures: list[BaseException] = []
    statuses: list[int] = []
    start = time.monotonic()

    async def main() -> None:
        limits = httpx.Limits(max_connections=20)
        async with mesh.httpx_async_client(timeout=10, limits=limits) as client:
            queue: asyncio.Queue[int] = asyncio.Queue()
            for i in range(TOTAL):
                queue.put_nowait(i)
            killed = asyncio.Event()

            async def worker() -> None:
                while not queue.empty():
                    i = queue.get_nowait()
                    if i == KILL_AFTER and not killed.is_set():
                        killed.set()
                        await asyncio.to_thread(kill, victim_server)
                    try:
                        r = await client.get(f"http://{HOST}/echo/{i}")
                        statuses.append(r.status_code)
                    except httpx.HTTPError as exc:
                        failures.append(exc)

            await asyncio.gather(*(worker() for _ in range(20)))

    asyncio.run(main())
    line = report("backend killed (async, 20 in flight)", statuses, failures, start)
    assert not failures, (line, failures[:3])
    assert len(statuses) == TOTAL and set(statuses) == {200}, line
    assert 0 < sum(victim.hits.values()) < TOTAL  # the victim served until it died


def test_sync_backend_killed_mid_load(world: tuple[Mesh, UvicornThread, EchoApp]) -> None:
    mesh, victim_server, victim = world
    failures: list[BaseException] = []
    statuses: list[int] = []
    lock = threading.Lock()
    counter = iter(range(TOTAL))
    start = time.monotonic()

    def worker(client: httpx.Client) -> None:
        for i in counter:  # shared: TOTAL requests across the threads
            if i == KILL_AFTER:
                kill(victim_server)
            try:
                status = client.get(f"http://{HOST}/echo/{i}").status_code
                with lock:
                    statuses.append(status)
            except httpx.HTTPError as exc:
                failures.append(exc)

    with mesh.httpx_client(timeout=10) as client, ThreadPoolExecutor(4) as pool:
        for f in [pool.submit(worker, client) for _ in range(4)]:
            f.result()
    line = report("backend killed (sync, 4 threads)", statuses, failures, start)
    assert not failures, (line, failures[:3])
    assert len(statuses) == TOTAL and set(statuses) == {200}, line
    assert 0 < sum(victim.hits.values()) < TOTAL


def test_kill_is_visible_without_retries(tmp_path: Path) -> None:
    """The same kill without a retry policy fails requests: the test above can fail."""
    with UvicornThread(EchoApp()) as a:
        b = UvicornThread(EchoApp()).start()
        kill(b)
        res = mesh_resources(HOST, {"svc": Upstream([a.port, b.port])}, [("/", "svc", {})])
        outcomes: list[Any] = []
        with (
            serving(tmp_path, res) as served,
            served.mesh() as mesh,
            mesh.httpx_client(timeout=5) as client,
        ):
            for i in range(4):  # a refused connection is Envoy's local 503 (UF)
                r = client.get(f"http://{HOST}/echo/{i}")
                outcomes.append((r.status_code, r.text))
    refused = "upstream connect error or disconnect/reset before headers. reset reason: "
    assert (503, refused + "remote connection failure") in outcomes
