"""max_connections and max_pending_requests end to end (Envoy's semantics): requests
beyond the cluster's connections wait pending; beyond max_pending_requests they fail
fast with CircuitBreakerOverflowError; HTTP/2 multiplexes on one connection; a host
with no connection gets one even when the cluster is at its limit."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from meshlib import Mesh
from meshlib.httpx import CircuitBreakerOverflowError
from meshlib.resilience.breakers import ClusterBreaker
from tests.httpx.mesh_xds import Upstream, mesh_resources, serving
from tests.httpx.servers import HypercornThread
from tests.support import UvicornThread

HOST = "limits.test"
WAIT = 10.0  # bound on every wait for a condition (never a timing assertion)


class GateApp:
    """Answers every request once the test opens the gate; records each arrival's
    client port (one port per connection)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.gate = threading.Event()
        self.ports: list[int] = []
        self.lock = threading.Lock()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        with self.lock:
            self.ports.append((scope.get("client") or ("", 0))[1])
        deadline = time.monotonic() + WAIT
        while not self.gate.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        headers = [(b"content-type", b"text/plain"), (b"x-backend", self.name.encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": self.name.encode()})

    def reset(self) -> None:
        self.gate.clear()
        with self.lock:
            self.ports.clear()

    def arrived(self) -> int:
        with self.lock:
            return len(self.ports)


def until(
    condition: Callable[[], bool], what: str, state: Callable[[], object] = lambda: ""
) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} {state()}")
        time.sleep(0.005)


def limits(max_connections: int, max_pending: int) -> dict[str, Any]:
    thresholds = {"max_connections": max_connections, "max_pending_requests": max_pending}
    return {"circuit_breakers": {"thresholds": [thresholds]}}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    apps = {name: GateApp(name) for name in ("one", "a", "b", "h2")}
    with (
        UvicornThread(apps["one"]) as one,
        UvicornThread(apps["a"]) as a,
        UvicornThread(apps["b"]) as b,
        HypercornThread(apps["h2"]) as h2,
    ):
        clusters = {
            "one": Upstream([one.port], extra=limits(1, 1)),
            "pair": Upstream([a.port, b.port], extra={"lb_policy": "ROUND_ROBIN", **limits(1, 0)}),
            "mux": Upstream([h2.port], http2=True, extra=limits(1, 1)),
        }
        routes = [
            ("/one/", "one", {"timeout": "0s"}),
            ("/pair/", "pair", {"timeout": "0s"}),
            ("/mux/", "mux", {"timeout": "0s"}),
        ]
        res = mesh_resources(HOST, clusters, routes)
        with (
            serving(tmp_path_factory.mktemp("cp"), res) as served,
            served.mesh(local_replies="raise") as mesh,
        ):
            for app in apps.values():
                app.gate.set()
            with mesh.httpx_client(timeout=WAIT) as client:  # resolve the clusters
                for prefix, _, _ in routes:
                    client.get(f"http://{HOST}{prefix}warm-up").raise_for_status()
            yield {"mesh": mesh, "apps": apps}


@pytest.fixture
def mesh(world: dict[str, Any]) -> Mesh:
    for app in world["apps"].values():
        app.reset()
    m: Mesh = world["mesh"]
    return m


def breaker(mesh: Mesh, cluster: str) -> ClusterBreaker:
    found = mesh.snapshot.clusters[cluster].breaker
    assert found is not None
    return found


def outcome(fn: Callable[[], httpx.Response]) -> Callable[[], str]:
    def run() -> str:
        try:
            return fn().text
        except CircuitBreakerOverflowError as exc:
            assert exc.limit == "max_pending_requests" and exc.reason == "overflow"
            assert isinstance(exc, httpx.TransportError)
            return "overflow"

    return run


def test_sync_requests_beyond_one_connection_queue_then_overflow(
    world: dict[str, Any], mesh: Mesh
) -> None:
    app: GateApp = world["apps"]["one"]
    b = breaker(mesh, "one")
    before = (b.stats.rq_pending_overflow, b.stats.cx_overflow)
    url = f"http://{HOST}/one/x"
    with (
        mesh.httpx_client(timeout=WAIT) as client,
        concurrent.futures.ThreadPoolExecutor(5) as pool,
    ):
        first = pool.submit(outcome(lambda: client.get(url)))
        until(lambda: app.arrived() == 1, "the first request at the backend")
        second = pool.submit(outcome(lambda: client.get(url)))
        until(lambda: b.active("pending") == 1, "the second request pending")
        rest = [pool.submit(outcome(lambda: client.get(url))) for _ in range(3)]
        assert [f.result(WAIT) for f in rest] == ["overflow"] * 3  # failed fast, gate shut
        app.gate.set()
        assert [first.result(WAIT), second.result(WAIT)] == ["one", "one"]
        assert len(set(app.ports)) == 1  # both on the one connection
        assert b.active("connections") == 1 and b.active("pending") == 0
    assert b.stats.rq_pending_overflow - before[0] == 3
    assert b.stats.cx_overflow - before[1] >= 1


def test_async_requests_beyond_one_connection_queue_then_overflow(
    world: dict[str, Any], mesh: Mesh
) -> None:
    app: GateApp = world["apps"]["one"]
    b = breaker(mesh, "one")
    url = f"http://{HOST}/one/x"

    async def wait_for(condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + WAIT
        while not condition() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        assert condition()

    async def main() -> list[str]:
        async with mesh.httpx_async_client(timeout=WAIT) as client:

            async def get() -> str:
                try:
                    return (await client.get(url)).text
                except CircuitBreakerOverflowError as exc:
                    assert exc.limit == "max_pending_requests"
                    return "overflow"

            first = asyncio.create_task(get())
            await wait_for(lambda: app.arrived() == 1)
            second = asyncio.create_task(get())
            await wait_for(lambda: b.active("pending") == 1)
            rest = await asyncio.gather(*(get() for _ in range(3)))
            app.gate.set()
            return [await first, await second, *rest]

    before = b.stats.rq_pending_overflow
    assert asyncio.run(main()) == ["one", "one", "overflow", "overflow", "overflow"]
    assert len(set(app.ports)) == 1
    assert b.stats.rq_pending_overflow - before == 3
    assert b.active("pending") == 0


def test_a_pending_request_gives_up_at_its_timeout(world: dict[str, Any], mesh: Mesh) -> None:
    app: GateApp = world["apps"]["one"]
    b = breaker(mesh, "one")
    url = f"http://{HOST}/one/x"
    with (
        mesh.httpx_client(timeout=WAIT) as client,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        first = pool.submit(lambda: client.get(url).text)
        until(lambda: app.arrived() == 1, "the first request at the backend")
        with pytest.raises(httpx.PoolTimeout):
            client.get(url, timeout=httpx.Timeout(WAIT, pool=0.05))
        assert b.active("pending") == 0
        app.gate.set()
        assert first.result(WAIT) == "one"
        assert client.get(url).text == "one"  # the connection is free again


def test_http2_multiplexes_on_one_connection_without_pending(
    world: dict[str, Any], mesh: Mesh
) -> None:
    app: GateApp = world["apps"]["h2"]
    b = breaker(mesh, "mux")
    before = b.stats.rq_pending_overflow
    url = f"http://{HOST}/mux/x"
    with (
        mesh.httpx_client(timeout=WAIT) as client,
        concurrent.futures.ThreadPoolExecutor(6) as pool,
    ):
        app.gate.set()
        assert client.get(url).text == "h2"  # the one connection, open
        app.reset()
        futures = [pool.submit(lambda: client.get(url).text) for _ in range(6)]
        until(
            lambda: app.arrived() >= 6,
            "six concurrent streams at the backend",
            lambda: (app.ports, b.stats, [f.exception() for f in futures if f.done()]),
        )
        app.gate.set()
        assert [f.result(WAIT) for f in futures] == ["h2"] * 6
        assert b.active("connections") == 1
    assert len(set(app.ports)) == 1
    assert b.stats.rq_pending_overflow == before
    assert b.active("connections") == 0  # closed with the client


def test_a_host_without_a_connection_gets_one_over_the_cluster_limit(
    world: dict[str, Any], mesh: Mesh
) -> None:
    a: GateApp = world["apps"]["a"]
    b_app: GateApp = world["apps"]["b"]
    b = breaker(mesh, "pair")
    before = b.stats.cx_overflow
    url = f"http://{HOST}/pair/x"
    with (
        mesh.httpx_client(timeout=WAIT) as client,
        concurrent.futures.ThreadPoolExecutor(2) as pool,
    ):
        futures = [pool.submit(lambda: client.get(url).text)]
        until(lambda: a.arrived() + b_app.arrived() == 1, "the first request")
        futures.append(pool.submit(lambda: client.get(url).text))
        # max_connections 1 is reached, but the other host has none: it gets one
        until(lambda: a.arrived() == 1 and b_app.arrived() == 1, "one request at each host")
        a.gate.set()
        b_app.gate.set()
        assert sorted(f.result(WAIT) for f in futures) == ["a", "b"]
        assert b.active("connections") == 2 and b.active("pending") == 0
    assert b.stats.cx_overflow - before >= 1
