"""The cluster layer end to end: hand-built xDS over the real control plane, real uvicorn
backends, requests through meshlib's httpx transport (attempt loop -> admission -> pick ->
outcome)."""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from meshlib import Call, Mesh
from meshlib._config_watch import ConfigWatcher
from meshlib._engine import Engine
from meshlib.balancing import xxhash64
from meshlib.httpx import MeshTransport
from meshlib.resilience.endpoint_breaker import EndpointBreakers
from tests.meshlib.cluster_xds import Backend, api_listener, cla, cluster, control_plane, routes
from tests.support import UvicornThread
from xds_client import XdsClient, load_bootstrap

LISTENER = "svc.test:80"
URL = "http://svc.test:80"


class Env:
    def __init__(self, tmp: Path) -> None:
        self.backends = [Backend() for _ in range(3)]
        self.servers = [UvicornThread(b).start() for b in self.backends]
        for b, s in zip(self.backends, self.servers, strict=True):
            b.port = s.port
        self.ports = [s.port for s in self.servers]
        self.cp, self.cache = control_plane(tmp)
        self.cp.start()

    def install(
        self, *clusters: Any, endpoints: list[Any] | None = None, **route_extra: Any
    ) -> None:
        names = [c.name for c in clusters]
        entries = [(f"/{n}", n, route_extra.get(n, {})) for n in names]
        eps = endpoints if endpoints is not None else [cla(n, self.ports) for n in names]
        self.cache.install(*clusters, *eps, routes("r", entries), api_listener(LISTENER, "r"))

    def close(self) -> None:
        self.cp.stop()
        for s in self.servers:
            s.stop()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.close()


def port_of(r: httpx.Response) -> int:
    return int(r.text)


def wait_for(condition: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_outlier_ejection_and_unejection(env: Env) -> None:
    od = {
        "consecutive_5xx": 3,
        "interval": "0.2s",
        "base_ejection_time": "0.5s",
        "max_ejection_percent": 50,
    }
    env.install(cluster("od", outlier_detection=od))
    env.backends[0].status = 500
    with Mesh(env.cp.bootstrap()) as mesh, mesh.httpx_client(timeout=5) as client:
        statuses = [client.get(f"{URL}/od").status_code for _ in range(30)]
        assert statuses.count(500) == 3  # the third consecutive 5xx ejects it at once
        assert statuses[-20:].count(500) == 0
        view = mesh.snapshot.clusters["od"]
        bad = next(e for e in view.endpoints if e.endpoint.port == env.ports[0])
        assert bad.ejected and bad.stats.times_ejected == 1
        env.backends[0].status = 200
        hits = env.backends[0].hits
        wait_for(lambda: not bad.ejected, "un-ejection after base_ejection_time")

        def back() -> bool:
            client.get(f"{URL}/od")
            return env.backends[0].hits > hits

        wait_for(back, "traffic to the un-ejected endpoint")


def test_state_survives_a_config_push(env: Env) -> None:
    od = {"consecutive_5xx": 2, "base_ejection_time": "60s", "max_ejection_percent": 50}
    env.install(cluster("od", outlier_detection=od))
    env.backends[0].status = 503
    with Mesh(env.cp.bootstrap()) as mesh, mesh.httpx_client(timeout=5) as client:
        for _ in range(9):
            client.get(f"{URL}/od")
        version = mesh.snapshot.version
        # push: endpoint weights change; the ejected endpoint must stay ejected
        weighted = cla("od", env.ports)
        for lb in weighted.endpoints[0].lb_endpoints:
            lb.load_balancing_weight.value = 2
        env.install(cluster("od", outlier_detection=od), endpoints=[weighted])
        wait_for(lambda: mesh.snapshot.version > version, "the pushed snapshot")
        wait_for(
            lambda: mesh.snapshot.clusters["od"].endpoints[0].endpoint.weight == 2, "new weights"
        )
        counts = collections.Counter(port_of(client.get(f"{URL}/od")) for _ in range(20))
        assert env.ports[0] not in counts and sum(counts.values()) == 20


def test_max_requests_overflow_through_the_transport(env: Env) -> None:
    env.install(cluster("cb", circuit_breakers={"thresholds": [{"max_requests": 2}]}))
    for b in env.backends:
        b.gate = threading.Event()
    results: list[object] = []
    lock = threading.Lock()
    with Mesh(env.cp.bootstrap()) as mesh, mesh.httpx_client(timeout=15) as client:
        with contextlib.suppress(httpx.TransportError):  # resolve the listener first
            client.get(f"{URL}/nothing-routes-here")

        def call() -> None:
            response = client.get(f"{URL}/cb")  # an overflow is Envoy's local 503
            r: object = response.status_code
            if r == 503 and response.headers.get("x-envoy-overloaded") == "true":
                r = "overflow"
            with lock:
                results.append(r)

        threads = [threading.Thread(target=call) for _ in range(4)]
        for t in threads:
            t.start()
        wait_for(lambda: len(results) == 2, "two overflowed calls")
        assert results == ["overflow", "overflow"]
        assert mesh.snapshot.clusters["cb"].breaker.stats.rq_overflow == 2  # type: ignore[union-attr]
        for b in env.backends:
            assert b.gate is not None
            b.gate.set()
        for t in threads:
            t.join(timeout=15)
    assert sorted(map(str, results)) == ["200", "200", "overflow", "overflow"]


def test_route_priority_picks_the_high_thresholds(env: Env) -> None:
    # max_requests 1 at HIGH, Envoy's default 1024 at DEFAULT: with one HIGH request held
    # at the backend, a second HIGH request overflows while DEFAULT requests still pass.
    thresholds = {"thresholds": [{"priority": "HIGH", "max_requests": 1}]}
    env.cache.install(
        cluster("cb", circuit_breakers=thresholds),
        cla("cb", env.ports[:1]),
        routes("r", [("/high", "cb", {"priority": "HIGH"}), ("/default", "cb", {})]),
        api_listener(LISTENER, "r"),
    )
    backend = env.backends[0]
    backend.gate = threading.Event()
    with Mesh(env.cp.bootstrap()) as mesh, mesh.httpx_client(timeout=15) as client:
        with contextlib.suppress(httpx.TransportError):  # resolve the listener first
            client.get(f"{URL}/nothing-routes-here")
        held: list[int] = []
        first = threading.Thread(target=lambda: held.append(client.get(f"{URL}/high").status_code))
        first.start()
        wait_for(lambda: backend.in_flight == 1, "the first HIGH request at the backend")
        overflow = client.get(f"{URL}/high")
        assert overflow.status_code == 503
        assert overflow.headers["x-envoy-overloaded"] == "true"
        # A DEFAULT request is not limited by the HIGH threshold: it reaches the backend
        # while the HIGH one is still held there.
        second = threading.Thread(
            target=lambda: held.append(client.get(f"{URL}/default").status_code)
        )
        second.start()
        wait_for(lambda: backend.in_flight == 2, "the DEFAULT request at the backend too")
        backend.gate.set()
        first.join(timeout=15)
        second.join(timeout=15)
        assert held == [200, 200]
        breaker = mesh.snapshot.clusters["cb"].breaker
        assert breaker is not None and breaker.stats.rq_overflow == 1


def test_priority_failover_and_health_status(env: Env) -> None:
    def assignment(p0_health: str) -> Any:
        def ep(port: int, health: str = "HEALTHY") -> dict[str, Any]:
            addr = {"socket_address": {"address": "127.0.0.1", "port_value": port}}
            return {"endpoint": {"address": addr}, "health_status": health}

        return cla(
            "pr",
            [],
            endpoints=[
                {"locality": {"zone": "a"}, "lb_endpoints": [ep(env.ports[0], p0_health)]},
                {
                    "locality": {"zone": "b"},
                    "priority": 1,
                    "lb_endpoints": [ep(env.ports[1]), ep(env.ports[2])],
                },
            ],
        )

    env.install(cluster("pr"), endpoints=[assignment("HEALTHY")])
    with Mesh(env.cp.bootstrap()) as mesh, mesh.httpx_client(timeout=5) as client:
        assert {port_of(client.get(f"{URL}/pr")) for _ in range(10)} == {env.ports[0]}
        version = mesh.snapshot.version
        env.install(cluster("pr"), endpoints=[assignment("UNHEALTHY")])
        wait_for(lambda: mesh.snapshot.version > version, "the pushed snapshot")
        got = {port_of(client.get(f"{URL}/pr")) for _ in range(10)}
        assert got == {env.ports[1], env.ports[2]}


def test_ring_hash_sticks_and_the_view_takes_envoys_hash(env: Env) -> None:
    hp = {"hash_policy": [{"header": {"header_name": "x-user"}}]}
    env.install(cluster("rh", lb_policy="RING_HASH"), rh=hp)
    with Mesh(env.cp.bootstrap()) as mesh, mesh.httpx_client(timeout=5) as client:
        for user in ("alice", "bob", "carol", "dave"):
            got = {port_of(client.get(f"{URL}/rh", headers={"x-user": user})) for _ in range(5)}
            assert len(got) == 1
        view = mesh.snapshot.clusters["rh"]
        call = Call(LISTENER, "GET", "/rh")
        spread = {view.pick(call, hash_key=xxhash64(f"user-{i}")).address for i in range(60)}
        assert len(spread) == 3
        key = xxhash64("alice")
        first = view.pick(call, hash_key=key)
        assert all(view.pick(call, hash_key=key) is first for _ in range(20))
        # previous_hosts: excluded endpoints are avoided while another one is usable
        assert view.pick(call, hash_key=key, exclude=[first]) is not first


def test_endpoint_breaker_opens_probes_once_and_closes(env: Env) -> None:
    env.install(cluster("eb"))
    env.backends[0].status = 500
    breakers = EndpointBreakers(fail_max=2, reset_timeout=0.5)
    bootstrap = load_bootstrap(env.cp.bootstrap())
    xds = XdsClient(bootstrap)
    engine = Engine(
        lambda publish: ConfigWatcher(xds, publish, endpoint_breakers=breakers), lambda a: a
    )
    try:
        with httpx.Client(transport=MeshTransport(engine), timeout=5) as client:
            statuses = [client.get(f"{URL}/eb").status_code for _ in range(12)]
            assert statuses.count(500) == 2  # then the breaker is open: skipped
            assert breakers.metrics["state.open"] == 1
            env.backends[0].status = 200
            hits = env.backends[0].hits

            def probed() -> bool:
                client.get(f"{URL}/eb")
                return env.backends[0].hits > hits

            wait_for(probed, "the half-open probe")
            assert breakers.metrics["state.half-open"] == 1
            assert breakers.metrics["state.closed"] == 1
    finally:
        engine.close()
        xds.close()
