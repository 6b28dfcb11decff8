"""WSGI middleware (Flask, Django, any WSGI app): the inbound side of the mesh.

    app.wsgi_app = MeshWSGIMiddleware(app.wsgi_app, inbound=Inbound(workload="ratings"))

or, for Flask, ``meshlib.integrations.flask.MeshFlask(app, inbound=...)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from types import TracebackType
from typing import Any

from meshlib.local_reply import rbac_denied

from ._inbound import Inbound, InboundCall, InboundRequest
from ._jwt_context import wsgi_apply
from .tls import spiffe_id_from_pem

__all__ = ["MeshWSGIMiddleware"]

StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
PEER_IDENTITY_KEY = "meshlib.peer_identity"


class MeshWSGIMiddleware:
    """Joins the caller's trace, enforces authorization, records Istio's metrics.

    The peer's SPIFFE ID is read from ``environ["meshlib.peer_identity"]`` or from the
    verified client certificate in ``environ["SSL_CLIENT_CERT"]`` (werkzeug sets it).
    """

    def __init__(self, app: WSGIApp, inbound: Inbound | None = None) -> None:
        self.app = app
        self.inbound = inbound or Inbound()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        headers = {
            key[5:].replace("_", "-").lower(): str(value)
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = str(environ["CONTENT_TYPE"])
        call = self.inbound.begin(
            InboundRequest(
                method=environ.get("REQUEST_METHOD", "GET"),
                path=environ.get("PATH_INFO", "/") or "/",
                headers=headers,
                scheme=environ.get("wsgi.url_scheme", "http"),
                host=environ.get("SERVER_NAME", ""),
                port=int(environ.get("SERVER_PORT") or 0),
                peer_identity=_peer_identity(environ),
                remote_ip=environ.get("REMOTE_ADDR"),
            )
        )
        request_id = call.context.request_id or ""
        reply = call.decision.reply
        if reply is not None:  # the mesh answers (local rate limit)
            line = f"{reply.status} {HTTPStatus(reply.status).phrase}"
            start_response(line, [*reply.headers, ("X-Request-Id", request_id)])
            call.finish(reply.status)
            return [reply.body]
        if call.denied:
            denied = call.decision.status
            line = "403 Forbidden" if denied == 403 else f"{denied} Service Unavailable"
            start_response(line, [("Content-Type", "text/plain"), ("X-Request-Id", request_id)])
            call.finish(denied)
            return [rbac_denied().body if denied == 403 else b"not serving"]
        status = [500]

        def watch(
            status_line: str,
            response_headers: list[tuple[str, str]],
            exc_info: tuple[type[BaseException], BaseException, TracebackType] | None = None,
        ) -> Callable[[bytes], object]:
            status[0] = int(status_line.split(" ", 1)[0])
            return start_response(
                status_line, [*response_headers, ("X-Request-Id", request_id)], exc_info
            )

        if call.decision.jwt is not None:  # the listener's jwt_authn verified a token
            wsgi_apply(environ, call.decision.jwt)
        try:
            with call.scope():
                body = self.app(environ, watch)
        except BaseException as exc:
            call.finish(500, exc)
            raise
        return _Finishing(body, call, status)


def _peer_identity(environ: dict[str, Any]) -> str | None:
    """Set by the server integration, or the verified client certificate werkzeug (and
    nginx/Apache conventions) put in ``SSL_CLIENT_CERT``."""
    identity = environ.get(PEER_IDENTITY_KEY)
    if identity is None and environ.get("SSL_CLIENT_CERT"):
        identity = spiffe_id_from_pem(environ["SSL_CLIENT_CERT"])
    return identity if isinstance(identity, str) else None


class _Finishing:
    """Ends the span when the server has sent (or dropped) the whole body."""

    def __init__(self, body: Iterable[bytes], call: InboundCall, status: list[int]) -> None:
        self._body, self._call, self._status = body, call, status
        self._done = False

    def __iter__(self) -> Iterator[bytes]:
        with self._call.scope():
            yield from self._body

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        try:
            if close is not None:
                close()
        finally:
            if not self._done:
                self._done = True
                self._call.finish(self._status[0])
