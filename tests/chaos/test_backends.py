"""Backends down and back, and a stalled backend, under load.

- one of two backends killed and restarted on its port: with retries, 0 failed, and the
  restarted one serves again;
- every backend down: requests fail fast with the documented error (no hang, no other
  exception), and once they are back every request succeeds;
- a backend that accepts and never answers: a per-try timeout retries on the healthy one
  (0 failed); alone behind a route timeout, each request ends with the timeout outcome.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.httpx.mesh_xds import RETRY_ALL, Upstream, mesh_resources, serving
from tests.httpx.servers import EchoApp
from tests.support import UvicornThread

from .load import Load, echo_ok, mesh_client
from .test_backend_killed import kill

pytestmark = pytest.mark.chaos
HOST = "backends.test"
MANY_RETRIES = {"circuit_breakers": {"thresholds": [{"max_retries": 4294967295}]}}


class StalledServer:
    """Accepts connections, reads whatever comes, never answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self._conns.append(conn)  # held open, never read from or written to

    def __enter__(self) -> StalledServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
        for c in self._conns:
            c.close()
        self._thread.join(5)


def _wait_until(predicate: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.02)


def test_one_backend_down_and_back(tmp_path: Path) -> None:
    steady, victim = EchoApp("steady"), EchoApp("victim")
    with UvicornThread(steady) as a:
        b = UvicornThread(victim).start()
        port = b.port
        res = mesh_resources(
            HOST,
            {"svc": Upstream([a.port, port], extra=MANY_RETRIES)},
            [("/", "svc", {"retry_policy": RETRY_ALL})],
        )
        try:
            with mesh_client(tmp_path, res) as (_served, client):
                send = echo_ok(client, HOST)

                with Load("one backend down and back", send, max_requests=100_000) as load:
                    load.wait_sent(400)
                    kill(b)
                    load.wait_sent(load.sent + 800)
                    hits_down = sum(victim.hits.values())
                    b = UvicornThread(victim, port=port).start()
                    _wait_until(lambda: sum(victim.hits.values()) > hits_down + 20)
                    load.wait_sent(load.sent + 400)
                    figures = load.stop()
                figures.extra["victim_hits_after_restart"] = sum(victim.hits.values()) - hits_down
                assert figures.failed == 0, figures
                assert sum(victim.hits.values()) > hits_down + 20, figures
        finally:
            b.stop()


def test_all_backends_down_and_back(tmp_path: Path) -> None:
    apps = [EchoApp("x"), EchoApp("y")]
    servers = [UvicornThread(app).start() for app in apps]
    ports = [s.port for s in servers]
    res = mesh_resources(HOST, {"svc": Upstream(ports)}, [("/", "svc", {})])
    try:
        with mesh_client(tmp_path, res) as (_served, client):
            outcomes: dict[str, int] = {"ok": 0, "refused": 0}

            def send(i: int) -> bool:
                try:
                    r = client.get(f"http://{HOST}/echo/{i}")
                except httpx.TransportError:  # refused, or reset in flight by the kill
                    outcomes["refused"] += 1
                    return True
                if r.status_code == 503:  # a local reply, once the core's lands
                    outcomes["refused"] += 1
                    return True
                outcomes["ok"] += 1
                return r.status_code == 200

            with Load("all backends down (expected refusals)", send, max_requests=3000) as down:
                down.wait_sent(200)
                for s in servers:
                    kill(s)
                down.wait_sent(down.sent + 1000)
                figures_down = down.stop()
            figures_down.extra.update(outcomes)
            assert figures_down.failed == 0 and outcomes["refused"] > 0, figures_down
            servers = [
                UvicornThread(app, port=p).start() for app, p in zip(apps, ports, strict=True)
            ]

            def ok() -> bool:
                try:
                    return client.get(f"http://{HOST}/echo/probe").status_code == 200
                except httpx.HTTPError:
                    return False

            _wait_until(ok)

            def strict(i: int) -> bool:
                return client.get(f"http://{HOST}/echo/{i}").status_code == 200

            with Load("all backends back", strict, max_requests=1000) as back:
                pass
            assert back.figures.failed == 0, back.figures
            assert all(app.hits for app in apps), back.figures
    finally:
        for s in servers:
            s.stop()


@pytest.fixture
def stalled() -> Iterator[StalledServer]:
    with StalledServer() as s:
        yield s


def test_stalled_backend_per_try_timeout_retries_elsewhere(
    tmp_path: Path, stalled: StalledServer
) -> None:
    good = EchoApp("good")
    with UvicornThread(good) as g:
        retry = {**RETRY_ALL, "per_try_timeout": "0.2s", "num_retries": 3}
        res = mesh_resources(
            HOST,
            {"svc": Upstream([stalled.port, g.port], extra=MANY_RETRIES)},
            [("/", "svc", {"retry_policy": retry, "timeout": "5s"})],
        )
        with mesh_client(tmp_path, res) as (_served, client):
            send = echo_ok(client, HOST)

            name = "stalled backend vs per-try timeout 0.2 s"
            with Load(name, send, threads=8, max_requests=300) as load:
                pass
            load.figures.extra["stalled_accepted"] = stalled.accepted
            assert load.figures.failed == 0, load.figures
            assert stalled.accepted > 0, load.figures  # it was tried, and timed out


def test_stalled_backend_route_timeout(tmp_path: Path, stalled: StalledServer) -> None:
    res = mesh_resources(
        HOST, {"svc": Upstream([stalled.port])}, [("/", "svc", {"timeout": "0.3s"})]
    )
    with (
        serving(tmp_path, res) as served,
        served.mesh() as mesh,
        mesh.httpx_client(timeout=30) as client,
    ):
        outcomes: dict[str, int] = {"timeout": 0}

        def send(i: int) -> bool:
            try:
                r = client.get(f"http://{HOST}/echo/{i}")
            except httpx.TimeoutException:  # today's outcome; 504 UT once local replies land
                outcomes["timeout"] += 1
                return True
            if r.status_code == 504:
                outcomes["timeout"] += 1
                return True
            return False

        with Load(
            "stalled backend vs route timeout 0.3 s", send, threads=8, max_requests=80
        ) as load:
            pass
        load.figures.extra.update(outcomes)
        assert load.figures.failed == 0 and outcomes["timeout"] == load.figures.sent, load.figures
