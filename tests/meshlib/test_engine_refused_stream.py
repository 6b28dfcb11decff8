"""retry_on ``refused-stream``: a real HTTP/2 server (the h2 library on a socket) resets
streams with REFUSED_STREAM; meshlib's httpx transports, over the project's control plane,
retry them under ``refused-stream`` and not under ``connect-failure``."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import httpcore
import httpx
import pytest
from h2.errors import ErrorCodes

from meshlib import Mesh
from meshlib._outcome import refused_stream
from tests.httpx.mesh_xds import HTTP2
from tests.meshlib.cluster_xds import api_listener, cla, cluster, control_plane, routes


class ResettingH2Server:
    """h2c (prior knowledge) on 127.0.0.1: resets the next ``reset_next`` streams with
    ``code``, answers the others ``200 ok``; counts the streams it received."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port: int = self.listener.getsockname()[1]
        self.streams = 0
        self.reset_next = 0
        self.code = ErrorCodes.REFUSED_STREAM
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        h2conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        h2conn.initiate_connection()
        conn.settimeout(0.2)
        with conn:
            conn.sendall(h2conn.data_to_send())
            while not self._stop.is_set():
                try:
                    data = conn.recv(65535)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                for event in h2conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        self._answer(h2conn, event.stream_id)
                conn.sendall(h2conn.data_to_send())

    def _answer(self, h2conn: h2.connection.H2Connection, stream_id: int) -> None:
        with self._lock:
            self.streams += 1
            reset = self.reset_next > 0
            self.reset_next -= int(reset)
        if reset:
            h2conn.reset_stream(stream_id, self.code)
        else:
            h2conn.send_headers(stream_id, [(":status", "200"), ("content-length", "2")])
            h2conn.send_data(stream_id, b"ok", end_stream=True)

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        for t in self._threads:
            t.join(timeout=5)


RETRY = {"num_retries": 2, "retry_back_off": {"base_interval": "0.001s"}}


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[Any, ResettingH2Server]]:
    server = ResettingH2Server()
    cp, cache = control_plane(tmp_path)
    cp.start()
    entries = [
        (f"/{on}", "h2", {"retry_policy": {**RETRY, "retry_on": on}})
        for on in ("refused-stream", "connect-failure")
    ]
    cache.install(
        cluster("h2", typed_extension_protocol_options=HTTP2),
        cla("h2", [server.port]),
        routes("r", entries),
        api_listener("svc.test:80", "r"),
    )
    yield cp, server
    cp.stop()
    server.close()


def test_refused_stream_is_retried_under_refused_stream(
    env: tuple[Any, ResettingH2Server],
) -> None:
    cp, server = env
    with (
        Mesh(cp.bootstrap(), local_replies="raise") as mesh,
        mesh.httpx_client(timeout=10) as client,
    ):
        server.reset_next = 1
        r = client.get("http://svc.test/refused-stream")
        assert (r.status_code, r.text, server.streams) == (200, "ok", 2)
        server.reset_next = 3  # the first try and both retries refused: the error stands
        with pytest.raises(httpx.RemoteProtocolError):
            client.get("http://svc.test/refused-stream")
        assert server.streams == 5


def test_refused_stream_is_not_retried_under_connect_failure(
    env: tuple[Any, ResettingH2Server],
) -> None:
    cp, server = env
    with (
        Mesh(cp.bootstrap(), local_replies="raise") as mesh,
        mesh.httpx_client(timeout=10) as client,
    ):
        server.reset_next = 1
        with pytest.raises(httpx.RemoteProtocolError):
            client.get("http://svc.test/connect-failure")
        assert server.streams == 1
        assert client.get("http://svc.test/connect-failure").text == "ok"


def test_other_resets_are_not_refused_streams(env: tuple[Any, ResettingH2Server]) -> None:
    cp, server = env
    server.code = ErrorCodes.INTERNAL_ERROR

    async def main() -> None:
        async with mesh.httpx_async_client(timeout=10) as client:
            server.reset_next = 1
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get("http://svc.test/refused-stream")
            assert server.streams == 1
            server.code = ErrorCodes.REFUSED_STREAM
            server.reset_next = 1
            r = await client.get("http://svc.test/refused-stream")
            assert (r.status_code, server.streams) == (200, 3)

    with Mesh(cp.bootstrap(), local_replies="raise") as mesh:
        asyncio.run(main())


def test_refused_stream_reads_the_h2_event_through_the_cause_chain() -> None:
    refused = h2.events.StreamReset(stream_id=1, error_code=ErrorCodes.REFUSED_STREAM)
    other = h2.events.StreamReset(stream_id=1, error_code=ErrorCodes.CANCEL)
    for event, expected in ((refused, True), (other, False)):
        try:
            try:
                raise httpcore.RemoteProtocolError(event)
            except httpcore.RemoteProtocolError as exc:
                raise httpx.RemoteProtocolError(str(exc)) from exc
        except httpx.RemoteProtocolError as mapped:
            assert refused_stream(mapped) is expected
    assert not refused_stream(httpx.ReadError("connection reset"))
    looped = httpx.ReadError("a")
    with contextlib.suppress(Exception):
        looped.__context__ = looped  # a cyclic chain ends too
    assert not refused_stream(looped)
