"""Client mTLS for gRPC subchannels: an in-process TLS bridge.

grpcio's ``ssl_channel_credentials`` always checks the server's DNS name, so it cannot
verify a URI-only SPIFFE certificate. For an endpoint of a cluster with an
UpstreamTlsContext, the subchannel instead dials (in plaintext) a unix socket this
bridge listens on; the bridge opens the real connection to the endpoint with Python's
``ssl`` (the cluster's rotating client context: mTLS, roots, SAN matchers checked after
the handshake) and copies bytes both ways on one asyncio loop in a daemon thread.

When the TLS connection cannot be made (bad settings, handshake or identity failure),
the bridge answers the gRPC client itself: every call on that connection ends with
UNAVAILABLE and a message naming the cluster and the problem, then the connection
closes (GOAWAY), so the next call tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import ssl
import tempfile
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from xds_client.resources import UpstreamTls

from .._log_limit import limited
from ..security import CertificateProviders, RotatingClientContext, upstream_context
from ..security import UpstreamTlsError as _UpstreamTlsError

__all__ = ["TlsBridge"]

log = logging.getLogger("meshlib.grpc")

_BUFFER = 256 * 1024  # stream read buffer and copy chunk
_REFUSE_WAIT = 10.0  # how long a refused connection waits for the client's calls

T = TypeVar("T")


def _grpc_message(text: str) -> str:
    """Percent-encode ``text`` for the grpc-message trailer (gRPC's HTTP/2 spec)."""
    out = []
    for byte in text.encode("utf-8"):
        out.append(chr(byte) if 0x20 <= byte <= 0x7E and byte != 0x25 else f"%{byte:02X}")
    return "".join(out)


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class TlsBridge:
    """Local plaintext listeners that forward to endpoints over the clusters' TLS.

    Shared by a Mesh's gRPC channels; its loop thread starts on the first TLS cluster
    and stops on :meth:`close`.
    """

    def __init__(self, providers: CertificateProviders | None = None) -> None:
        self._providers = providers or CertificateProviders()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._dir: str | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._listeners: dict[tuple[str, str, UpstreamTls], str] = {}
        self._contexts: dict[tuple[str, UpstreamTls], RotatingClientContext | str] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def dial(self, cluster: str, tls: UpstreamTls, address: str, connect_timeout: float) -> str:
        """The grpcio target (``unix:...``) that reaches ``address`` with ``cluster``'s
        TLS: one listener per (endpoint, cluster TLS settings), made on first use."""
        key = (address, cluster, tls)
        found = self._listeners.get(key)
        if found is not None:
            return found
        with self._lock:
            found = self._listeners.get(key)
            if found is not None:
                return found
            if self._closed:
                raise RuntimeError("the mesh's TLS bridge is closed")
            loop, folder = self._start()
            path = os.path.join(folder, f"{len(self._listeners)}.sock")

            async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
                await self._connection(r, w, cluster, tls, address, connect_timeout)

            server = self._run(loop, asyncio.start_unix_server(handle, path, limit=_BUFFER))
            self._servers.append(server)
            target = self._listeners[key] = f"unix:{path}"
            return target

    def _start(self) -> tuple[asyncio.AbstractEventLoop, str]:
        if self._loop is None or self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="meshlib-tls-")
            os.chmod(self._dir, 0o700)
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name="meshlib-tls-bridge", daemon=True
            )
            thread.start()
            self._loop, self._thread = loop, thread
        return self._loop, self._dir

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    def _context(self, cluster: str, tls: UpstreamTls) -> ssl.SSLContext:
        """The current client context for new connections; ValueError (the reason) when
        the cluster's TLS settings cannot be used."""
        found = self._contexts.get((cluster, tls))
        if found is None:
            try:
                found = upstream_context(tls, self._providers, cluster=cluster, protocol="http2")
            except _UpstreamTlsError as exc:
                found = str(exc)
            self._contexts[(cluster, tls)] = found
        if isinstance(found, str):
            raise ValueError(found)
        return found.current()

    async def _connection(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        cluster: str,
        tls: UpstreamTls,
        address: str,
        connect_timeout: float,
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            host, port = _split(address)
            try:
                ctx = self._context(cluster, tls)
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection(
                        host, port, ssl=ctx, server_hostname=tls.sni or host, limit=_BUFFER
                    ),
                    connect_timeout,
                )
            except (TimeoutError, OSError, ValueError) as exc:
                problem = str(exc) or type(exc).__name__
                if isinstance(exc, TimeoutError):
                    problem = f"TLS connection timed out after {connect_timeout:g}s"
                message = f"cluster {cluster}: upstream TLS to {address} failed: {problem}"
                limited(log).warning((cluster, address), "%s", message)
                await _refuse(reader, writer, message)
                return
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            if task is not None:
                self._tasks.discard(task)

    def close(self) -> None:
        """Stop every listener and connection, and the loop thread."""
        with self._lock:
            self._closed = True
            loop, thread, folder = self._loop, self._thread, self._dir
            self._loop = self._thread = self._dir = None
            servers, self._servers = self._servers, []
            self._listeners.clear()
        if loop is None:
            return

        async def shutdown() -> None:
            for server in servers:
                server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(5.0)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(5.0)
        if not loop.is_running():
            loop.close()
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    """Copy ``src`` to ``dst`` until either side ends; then close ``dst``."""
    try:
        while True:
            data = await src.read(_BUFFER)
            if not data:
                break
            dst.write(data)
            await dst.drain()
    except (OSError, ssl.SSLError):
        pass
    finally:
        dst.close()


async def _refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, message: str) -> None:
    """Answer the gRPC client's calls on this connection with UNAVAILABLE + ``message``
    (a trailers-only HTTP/2 response each), then GOAWAY and close."""
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
    )
    conn.initiate_connection()
    headers = [
        (":status", "200"),
        ("content-type", "application/grpc"),
        ("grpc-status", "14"),
        ("grpc-message", _grpc_message(message)),
    ]
    try:
        writer.write(conn.data_to_send())
        answered = False
        while not answered:
            data = await asyncio.wait_for(reader.read(_BUFFER), _REFUSE_WAIT)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived) and event.stream_id:
                    conn.send_headers(event.stream_id, headers, end_stream=True)
                    answered = True
            if answered:
                conn.close_connection()
            writer.write(conn.data_to_send())
            await writer.drain()
    except (TimeoutError, OSError, h2.exceptions.H2Error):
        pass
    finally:
        writer.close()
