"""Sync status of the connected clients (istiod's ``/debug/syncz``), and a small HTTP
server for it (loopback unless told otherwise), read by ``meshlib proxy-status``.

For each open ADS stream: the node id, what kind of client it is, and per resource type
the version and nonce last sent, and the client's last verdict on it (ACK, or NACK with
its error) from the :class:`EventLog`. A type is ``SYNCED`` when the last response sent
was ACKed, ``STALE`` while it awaits the client's verdict, ``NACKED`` when the client
refused it, and ``NOT SENT`` when nothing was sent yet.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..._loopback import is_loopback as _is_loopback
from ._events import AckEvent, EventLog

__all__ = ["SyncServer", "sync_status"]

log = logging.getLogger("meshlib.controlplane")


def _snapshot_of(items: Callable[[], Any]) -> Any:
    """``items()`` read from another thread than the server loop's: retried while the
    loop changes the collection under it."""
    for _ in range(10):
        try:
            return items()
        except RuntimeError:  # changed size during iteration
            continue
    return items()


def sync_status(servicer: Any, events: EventLog) -> list[dict[str, Any]]:
    """One entry per open stream: ``node_id``, ``kind``, ``protocol`` and ``types``
    (type_url -> ``sent``, ``nonce``, ``acked``, ``status``, ``error``)."""
    streams = _snapshot_of(servicer.streams)
    last: dict[tuple[str, str], AckEvent] = {}
    for e in events.events():
        last[e.node_id, e.type_url] = e
    out = []
    for state in streams:
        sent = _snapshot_of(state.sent)
        types = {}
        for type_url, (version, nonce) in sorted(sent.items()):
            verdict = last.get((state.node_id, type_url))
            acked = ""
            error = ""
            if not nonce:
                status = "NOT SENT"
            elif verdict is None or verdict.nonce != nonce:
                status = "STALE"
            elif verdict.kind == "ACK":
                status = "SYNCED"
            else:
                status, error = "NACKED", verdict.error_detail or ""
            if verdict is not None and verdict.kind == "ACK":
                acked = verdict.version
            elif verdict is not None:  # the last good version is the one before the NACK
                acks = [e for e in events.events(state.node_id, "ACK") if e.type_url == type_url]
                acked = acks[-1].version if acks else ""
            types[type_url] = {
                "sent": version,
                "nonce": nonce,
                "acked": acked,
                "status": status,
                "error": error,
            }
        out.append(
            {
                "node_id": state.node_id,
                "kind": getattr(state.view, "kind", ""),
                "namespace": state.namespace,
                "protocol": "delta" if type(state).__name__.startswith("Delta") else "sotw",
                "types": types,
            }
        )
    out.sort(key=lambda s: s["node_id"])
    return out


class SyncServer:
    """Serves ``GET /debug/syncz`` (JSON) from ``status()`` on its own thread.

    ``host`` must be a loopback address unless ``allow_remote=True``; ``port=0`` picks
    a free port. Every other path is 404, every other method 405."""

    def __init__(
        self,
        status: Callable[[], list[dict[str, Any]]],
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        allow_remote: bool = False,
    ) -> None:
        if not allow_remote and not _is_loopback(host):
            raise ValueError(
                f"debug server host {host!r} is not a loopback address; "
                "pass allow_remote=True to expose client status beyond this machine"
            )
        handler = type("_SyncHandler", (_Handler,), {"status": staticmethod(status)})
        self._httpd = ThreadingHTTPServer((host, port), handler)
        self._httpd.daemon_threads = True
        self.host = host
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.2},
            daemon=True,
            name="meshlib-cp-debug",
        )

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> SyncServer:
        """Serve on a daemon thread (again a no-op); returns self."""
        if not self._thread.is_alive():
            self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> SyncServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    status: Callable[[], list[dict[str, Any]]]
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/debug/syncz":
            self._send(404, b"no such debug endpoint; try /debug/syncz\n", "text/plain")
            return
        try:
            body = json.dumps(self.status(), indent=2).encode()
        except Exception as exc:
            log.exception("debug/syncz failed")
            self._send(500, f"{type(exc).__name__}: {exc}\n".encode(), "text/plain")
            return
        self._send(200, body, "application/json")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):
            return lambda: self._send(405, b"read only\n", "text/plain")
        raise AttributeError(name)

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("debug: " + format, *args)
