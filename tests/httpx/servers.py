"""Real servers on 127.0.0.1 for the httpx adapter tests: an echo ASGI app served by
uvicorn (HTTP/1.1, optionally mTLS) or hypercorn (HTTP/2: h2c prior knowledge or h2 over
TLS), and a raw TCP server that resets connections."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import socket
import ssl
import struct
import threading
import time
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config

from meshlib.context import current_request

_VERBS = ("flaky", "slow", "stream", "whoami", "echo")


class EchoApp:
    """``/flaky/<key>/<n>``: 503 for the first n hits of key; ``/slow/<ms>``: answer late;
    ``/stream/<n>``: n body chunks; ``/whoami``: the caller's SPIFFE ID (under
    MeshMiddleware); anything else: JSON with protocol, host, headers, client port and
    the request body's size. Hits per path are counted."""

    def __init__(self, name: str = "echo") -> None:
        self.name = name
        self.hits: collections.Counter[str] = collections.Counter()
        self.bodies: dict[str, bytes] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path: str = scope["path"]
        parts = path.strip("/").split("/")
        if parts[0] not in _VERBS and len(parts) > 1:
            parts = parts[1:]  # a routing prefix (/h2/..., /tiny/...)
        self.hits[path] += 1
        status = 200
        if parts[0] == "flaky" and self.hits[path] <= int(parts[2]):
            status = 503
        if parts[0] == "slow":
            await asyncio.sleep(int(parts[1]) / 1000)
        start = {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"x-backend", self.name.encode())],
        }
        if parts[0] == "stream":
            await send(start)
            for i in range(int(parts[1])):
                await send({"type": "http.response.body", "body": b"%d\n" % i, "more_body": True})
                await asyncio.sleep(0.001)
            await send({"type": "http.response.body", "body": b""})
            return
        self.bodies[path] = bytes(body)
        ctx = current_request()
        payload = {
            "backend": self.name,
            "path": path,
            "http_version": scope["http_version"],
            "headers": {k.decode(): v.decode() for k, v in scope["headers"]},
            "client_port": (scope.get("client") or ("", 0))[1],
            "body_size": len(body),
            "peer": ctx.peer_identity if ctx else None,
        }
        await send(start)
        await send({"type": "http.response.body", "body": json.dumps(payload).encode()})


class HypercornThread:
    """Serve an ASGI app with hypercorn on 127.0.0.1 (HTTP/1.1 and h2c; TLS with ALPN h2
    when ``certfile`` etc. are given in ``config``), in a thread."""

    def __init__(self, app: Any, **config: Any) -> None:
        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.config = Config()
        # hypercorn owns the descriptor from here (detached: never closed twice)
        self.config.bind = [f"fd://{self.sock.detach()}"]
        self.config.loglevel = "WARNING"
        self.config.accesslog = None
        for k, v in config.items():
            setattr(self.config, k, v)
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            await serve(self.app, self.config, shutdown_trigger=self._stop.wait)

        asyncio.run(main())

    def start(self) -> HypercornThread:
        self.thread.start()
        self._ready.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # bounded: until the socket accepts
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("hypercorn did not start")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(timeout=10)

    def __enter__(self) -> HypercornThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ResettingServer:
    """Accepts connections and resets each one (SO_LINGER 0) once its request arrived."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.resets = 0
        self._closed = False
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    conn.recv(65536)
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.resets += 1

    def __enter__(self) -> ResettingServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed = True
        self.sock.close()
        self.thread.join(timeout=5)


def hypercorn_tls(files: Any) -> dict[str, Any]:
    """hypercorn settings for mTLS with ALPN h2 from a workload's files."""
    return {
        "certfile": str(files.cert_chain),
        "keyfile": str(files.key),
        "ca_certs": str(files.root_cert),
        "verify_mode": ssl.CERT_REQUIRED,
        "alpn_protocols": ["h2", "http/1.1"],
    }
