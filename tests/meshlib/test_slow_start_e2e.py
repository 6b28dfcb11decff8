"""Slow start end to end: real uvicorn backends, the project's control plane over ADS,
requests through ``mesh.httpx_client()``. A backend added to a running cluster gets a
reduced share while it ramps and its full share once the ramp timer has finished."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from meshlib import Mesh
from tests.meshlib.cluster_xds import Backend, api_listener, cla, cluster, control_plane, routes
from tests.support import UvicornThread

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

    def install(self, ports: list[int]) -> None:
        """Two round-robin clusters over the same backends: slow start over 60 s and 1 s."""
        clusters = [
            cluster(name, round_robin_lb_config={"slow_start_config": {"slow_start_window": w}})
            for name, w in (("slow", "60s"), ("quick", "1s"))
        ]
        entries = [(f"/{c.name}", c.name, {}) for c in clusters]
        self.cache.install(
            *clusters,
            *(cla(c.name, ports) for c in clusters),
            routes("r", entries),
            api_listener("svc.test:80", "r"),
        )

    def close(self) -> None:
        self.cp.stop()
        for s in self.servers:
            s.stop()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.close()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def ports_hit(client: httpx.Client, path: str, n: int) -> collections.Counter[int]:
    return collections.Counter(int(client.get(f"{URL}{path}").text) for _ in range(n))


def test_a_backend_added_later_ramps_up(env: Env) -> None:
    env.install(env.ports[:2])  # the first endpoint set: no slow start for these
    with Mesh(env.cp.bootstrap()) as mesh, mesh.httpx_client(timeout=5) as client:
        before = ports_hit(client, "/slow", 40)
        assert before == {env.ports[0]: 20, env.ports[1]: 20}
        env.install(env.ports)  # the third backend joins both clusters

        def joined(name: str) -> bool:
            return len(mesh.snapshot.clusters[name].endpoints) == 3

        wait_for(lambda: joined("slow") and joined("quick"), "the third endpoint")
        new = next(
            e for e in mesh.snapshot.clusters["slow"].endpoints if e.endpoint.port == env.ports[2]
        )
        assert new.slow_start_at is not None
        # 60 s window: weight 10% for its first 6 s, so about 0.1/2.1 of the requests,
        # far below the third it gets without slow start
        hits = ports_hit(client, "/slow", 210)
        assert 0 < hits[env.ports[2]] <= 30
        assert hits[env.ports[0]] > 80 and hits[env.ports[1]] > 80

        # 1 s window: the ramp timer rebuilds the balancer until the window is over
        def ramped() -> bool:
            picker = mesh.snapshot.clusters["quick"].picker
            return picker is not None and picker.balancer.ramp_until is None

        wait_for(ramped, "the end of the 1 s slow-start window")
        hits = ports_hit(client, "/quick", 300)
        assert hits == {p: 100 for p in env.ports}  # round robin, full weights: exact
