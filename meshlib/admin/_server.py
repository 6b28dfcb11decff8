"""AdminServer: Envoy's admin port, for a proxyless mesh (read only, loopback by default).

    with mesh.admin(port=15000) as admin:       # or AdminServer(mesh).start()
        print(admin.url)                        # http://127.0.0.1:15000/

GET only: every other method is answered 405, so nothing can change the mesh remotely.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .._loopback import is_loopback as _is_loopback
from ..telemetry import StatsRegistry, Telemetry
from ..telemetry._metrics import process_instruments
from ._config_dump import TYPES, DumpQueryError, config_dump, xds_client_of
from ._info import certs_json, listeners_json, listeners_text, server_info_json
from ._routes import routes_json
from ._stats import (
    MAX_PARAMS,
    FilterError,
    cluster_samples,
    compile_filter,
    filtered,
    ratelimit_samples,
    xds_samples,
)
from ._views import calls_by, clusters_json, clusters_text, ready, xds_json

__all__ = ["ENDPOINTS", "AdminServer"]

log = logging.getLogger("meshlib.admin")

#: Path -> what it serves (also the ``/help`` text).
ENDPOINTS = {
    "/": "the dashboard (clusters, endpoints, success rate, latency, breakers, xDS)",
    "/config_dump": "the xDS config in Envoy's JSON shape (?resource=, ?mask=, ?types=)",
    "/clusters": "upstream clusters and endpoints (?format=json)",
    "/stats": "statistics (?format=json, ?filter=REGEX)",
    "/stats/prometheus": "statistics in Prometheus text format",
    "/xds": "xDS connection state and per-resource status (JSON)",
    "/routes": "every route in words: match, clusters and weights, faults, calls (JSON)",
    "/listeners": "the listeners (targets) the mesh resolved (?format=json)",
    "/server_info": "version, state, uptime, node and options (JSON, Envoy's ServerInfo)",
    "/certs": "workload certificate and CA roots: SPIFFE ID, issuer, serial, expiry (JSON)",
    "/ready": "200 LIVE once every requested target is resolved, else 503",
    "/healthz": "200 OK while the server runs",
    "/help": "this list",
}
_PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"


def _dashboard() -> bytes:
    return resources.files(__package__).joinpath("dashboard.html").read_bytes()


class AdminServer:
    """Serves the mesh's admin endpoints over HTTP on its own threads.

    ``host`` must be a loopback address unless ``allow_remote=True``; ``port=0`` picks a
    free port. ``telemetry`` defaults to ``mesh.telemetry`` when the mesh has one.
    ``grpc_port`` (0: pick one) also serves CSDS (``ClientStatusDiscoveryService``) for the
    mesh's xDS client on ``grpc_address``.
    """

    def __init__(
        self,
        mesh: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        allow_remote: bool = False,
        telemetry: Telemetry | None = None,
        grpc_port: int | None = None,
    ) -> None:
        if not allow_remote and not _is_loopback(host):
            raise ValueError(
                f"AdminServer host {host!r} is not a loopback address; "
                "pass allow_remote=True to expose the admin endpoints beyond this machine"
            )
        if not 0 <= port < 65536:
            raise ValueError(f"AdminServer port must be 0-65535, got {port}")
        self.mesh = mesh
        self.host = host
        self.telemetry = telemetry if telemetry is not None else getattr(mesh, "telemetry", None)
        self._port = port
        self._grpc_port = grpc_port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._grpc: Any = None
        self.grpc_address = ""

    @property
    def port(self) -> int:
        return self._httpd.server_address[1] if self._httpd is not None else self._port

    @property
    def url(self) -> str:
        """``http://host:port`` (no trailing slash)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> AdminServer:
        """Bind and serve on a daemon thread; returns self."""
        if self._httpd is not None:
            return self
        handler = type("_BoundHandler", (_Handler,), {"admin": self})
        server_cls = _V6Server if ":" in self.host else ThreadingHTTPServer
        httpd = server_cls((self.host, self._port), handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.2},
            daemon=True,
            name=f"meshlib-admin-{self.port}",
        )
        self._thread.start()
        if self._grpc_port is not None:
            self._start_grpc(self._grpc_port)
        return self

    def _start_grpc(self, port: int) -> None:
        import concurrent.futures

        import grpc
        from envoy.service.status.v3 import csds_pb2_grpc

        servicer_cls = _csds_servicer()
        client = xds_client_of(self.mesh)
        if client is None:
            raise RuntimeError("CSDS: the mesh has no xDS client")
        server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=2))
        csds_pb2_grpc.add_ClientStatusDiscoveryServiceServicer_to_server(
            servicer_cls(client), server
        )
        host = f"[{self.host}]" if ":" in self.host else self.host
        bound = server.add_insecure_port(f"{host}:{port}")
        server.start()
        self._grpc = server
        self.grpc_address = f"{host}:{bound}"

    def stop(self) -> None:
        """Stop serving and release the ports."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            self._port = httpd.server_address[1]
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        grpc_server, self._grpc = self._grpc, None
        if grpc_server is not None:
            grpc_server.stop(grace=None)

    def __enter__(self) -> AdminServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- pages --------------------------------------------------------------------------
    def render(self, path: str, query: dict[str, list[str]]) -> tuple[int, str, bytes]:
        """``(status, content type, body)`` for a GET of ``path``."""
        fmt = (query.get("format") or [""])[0]
        if path == "/":
            return 200, "text/html; charset=utf-8", _dashboard()
        if path == "/healthz":
            return 200, "text/plain", b"OK\n"
        if path == "/ready":
            ok, detail = ready(self.mesh)
            return (200 if ok else 503), "text/plain", (detail + "\n").encode()
        if path == "/config_dump":
            types = {t for v in query.get("types", []) for t in v.split(",") if t}
            unknown = types - set(TYPES)
            if unknown:
                return _error(400, f"unknown types {sorted(unknown)}; use {sorted(TYPES)}")
            try:
                return _json(
                    config_dump(
                        self.mesh,
                        types,
                        resource=(query.get("resource") or [""])[0],
                        mask=(query.get("mask") or [""])[0],
                    )
                )
            except DumpQueryError as exc:
                return _error(exc.status, str(exc))
        if path == "/clusters":
            doc = clusters_json(self.mesh, self.telemetry)
            return _json(doc) if fmt == "json" else (200, "text/plain", clusters_text(doc).encode())
        if path == "/xds":
            return _json(xds_json(self.mesh, self.telemetry))
        if path == "/routes":
            dump = config_dump(self.mesh, {"routes"})
            return _json(routes_json(dump, calls_by(self.telemetry, "route")))
        if path == "/listeners":
            doc = listeners_json(self.mesh)
            return (
                _json(doc) if fmt == "json" else (200, "text/plain", listeners_text(doc).encode())
            )
        if path == "/server_info":
            return _json(server_info_json(self.mesh, ready(self.mesh)[0]))
        if path == "/certs":
            return _json(certs_json(self.mesh))
        if path in ("/stats", "/stats/prometheus"):
            return self._stats(path, fmt, query)
        if path == "/help":
            text = "".join(f"  {p}: {what}\n" for p, what in ENDPOINTS.items())
            return 200, "text/plain", ("admin commands are:\n" + text).encode()
        return _error(404, f"no admin endpoint {path!r}; see /help")

    def _stats(self, path: str, fmt: str, query: dict[str, list[str]]) -> tuple[int, str, bytes]:
        try:  # refuse a bad filter before any work
            if query.get("filter"):
                compile_filter(query["filter"][0])
        except FilterError as exc:
            return _error(400, str(exc))
        samples = cluster_samples(self.mesh, self.telemetry)
        samples += xds_samples(self.mesh, self.telemetry)
        samples += ratelimit_samples(self.mesh)
        registry = self.telemetry.stats if self.telemetry is not None else StatsRegistry()
        also = [process_instruments().stats]  # the inbound side's (reporter=destination)
        if self.telemetry is not None:
            also.append(self.telemetry.inbound.stats)
        if path == "/stats/prometheus":
            return 200, _PROMETHEUS, registry.prometheus(samples, also).encode()
        lines = filtered(registry.envoy_text(samples, also), query)
        if fmt == "json":
            return _json({"stats": [{"name": n, "value": v} for n, v in lines]})
        return 200, "text/plain", "".join(f"{n}: {v}\n" for n, v in lines).encode()


def _json(doc: Any) -> tuple[int, str, bytes]:
    return 200, "application/json", json.dumps(doc, indent=2).encode()


def _error(status: int, message: str) -> tuple[int, str, bytes]:
    return status, "text/plain", (message + "\n").encode()


def _csds_servicer() -> Any:
    import xds_client

    servicer = getattr(xds_client, "CsdsServicer", None)
    if servicer is None:  # not exported yet: the module that defines it
        from xds_client import _csds

        servicer = _csds.CsdsServicer
    return servicer


class _V6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    admin: AdminServer
    server_version = "meshlib-admin"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        try:
            query = parse_qs(parts.query, errors="strict", max_num_fields=MAX_PARAMS)
        except UnicodeDecodeError:
            self._send(*_error(400, "query: not valid UTF-8 once percent-decoded"))
            return
        except ValueError:
            self._send(*_error(400, f"query: more than {MAX_PARAMS} parameters"))
            return
        try:
            status, ctype, body = self.admin.render(parts.path, query)
        except Exception as exc:
            log.exception("admin %s failed", self.path)
            status, ctype, body = _error(500, f"{type(exc).__name__}: {exc}")
        self._send(status, ctype, body)

    def _not_allowed(self) -> None:
        self.close_connection = True  # any request body stays unread
        self._send(405, "text/plain", b"method not allowed: the admin server is read only\n")

    def __getattr__(self, name: str) -> Any:
        # BaseHTTPRequestHandler dispatches to do_<METHOD>: every method but GET is 405.
        if name.startswith("do_"):
            return self._not_allowed
        raise AttributeError(name)

    def _send(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if status == 405:
            self.send_header("Allow", "GET")
        if ctype.startswith("text/html"):
            self.send_header(
                "Content-Security-Policy",
                "default-src 'none'; connect-src 'self'; script-src 'unsafe-inline'; "
                "style-src 'unsafe-inline'",
            )
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("admin: " + format, *args)
