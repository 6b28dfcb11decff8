"""Serving a workload as its server listener says: plaintext, or mTLS under STRICT.

gRPC's xDS server picks each connection's filter chain; a Python HTTP server speaks TLS
or not for a whole socket. :class:`FollowingServer` therefore watches the workload's
:class:`~meshlib.integrations.MeshInbound` and, when the PeerAuthentication mode flips,
restarts its server on the same port with the listener's mTLS context (or without).
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from typing import Any, Protocol

__all__ = ["FollowingServer", "UvicornServer", "WerkzeugServer"]

log = logging.getLogger("meshlib.demo")


class _Server(Protocol):
    def start(self, ssl_context: ssl.SSLContext | None) -> None: ...
    def stop(self) -> None: ...


class _Threaded:
    """An app served on ``host:port`` from a thread; :meth:`start` again after :meth:`stop`."""

    def __init__(self, app: Any, port: int, host: str = "127.0.0.1") -> None:
        self.app, self.port, self.host = app, port, host
        self._server: Any = None
        self._thread: threading.Thread | None = None


class UvicornServer(_Threaded):
    """An ASGI app under uvicorn on ``host:port``, in a thread."""

    def start(self, ssl_context: ssl.SSLContext | None) -> None:
        import uvicorn

        from meshlib.integrations.uvicorn import MeshH11Protocol

        extra: dict[str, Any] = {}
        if ssl_context is not None:
            extra["ssl_context_factory"] = lambda config, default: ssl_context
        config = uvicorn.Config(
            self.app,
            host=self.host,
            port=self.port,
            log_level="warning",
            lifespan="off",
            http=MeshH11Protocol,
            timeout_graceful_shutdown=1,
            **extra,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, name=f"uvicorn-{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on {self.host}:{self.port}")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)
            self._server = self._thread = None


class WerkzeugServer(_Threaded):
    """A WSGI app under werkzeug's threaded server on ``host:port``, in a thread."""

    def start(self, ssl_context: ssl.SSLContext | None) -> None:
        from werkzeug.serving import make_server

        self._server = make_server(
            self.host, self.port, self.app, threaded=True, ssl_context=ssl_context
        )
        self.port = int(self._server.server_port)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"werkzeug-{self.port}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(10)
            self._server = self._thread = None


class FollowingServer:
    """Keeps ``server`` speaking what ``inbound``'s listener asks: mTLS when STRICT."""

    def __init__(self, server: _Server, inbound: Any, poll: float = 0.05) -> None:
        self.server, self.inbound, self.poll = server, inbound, poll
        self.tls: bool | None = None  # None until first started
        self.flips = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="meshlib-demo-tls", daemon=True)

    def start(self, timeout: float = 10.0) -> FollowingServer:
        state = self.inbound.wait_until_serving(timeout)
        if not state.serving:
            raise RuntimeError(f"{self.inbound.listener_name}: {state.reason}")
        self._apply(state.mode == "STRICT")
        self._thread.start()
        return self

    def _apply(self, tls: bool) -> None:
        context = self.inbound.server_ssl_context() if tls else None
        if self.tls is not None:
            self.server.stop()
            self.flips += 1
        self.server.start(context)
        self.tls = tls
        log.info("%s: serving %s", self.inbound.listener_name, "mTLS" if tls else "plaintext")

    def _follow(self) -> None:
        while not self._stop.wait(self.poll):
            state = self.inbound.state
            if state.serving and (state.mode == "STRICT") != self.tls:
                try:
                    self._apply(state.mode == "STRICT")
                except Exception:
                    log.exception("%s: cannot follow the listener", self.inbound.listener_name)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.server.stop()
