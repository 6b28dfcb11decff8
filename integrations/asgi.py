"""Pure ASGI middleware (FastAPI, Starlette, any ASGI app): the inbound side of the mesh.

    app.add_middleware(MeshMiddleware, inbound=Inbound(workload="reviews-v1", ...))

Not BaseHTTPMiddleware: streaming responses and background tasks are untouched, and
the request context is current in the handler's task (and in threads FastAPI runs sync
handlers in, which copy the context).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from meshlib.local_reply import rbac_denied

from ._inbound import Inbound, InboundRequest
from ._jwt_context import SCOPE_KEY, asgi_headers

__all__ = ["MeshMiddleware", "peer_identity_from_scope"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DENIED_BODY = rbac_denied().body  # Envoy's RBAC filter: 403 "RBAC: access denied"


def peer_identity_from_scope(scope: Scope) -> str | None:
    """The caller's SPIFFE ID, from ``scope["extensions"]["tls"]["meshlib.peer_identity"]``
    (set by the TLS-terminating server integration for verified client certificates)."""
    tls = scope.get("extensions", {}).get("tls") or {}
    identity = tls.get("meshlib.peer_identity")
    return identity if isinstance(identity, str) else None


class MeshMiddleware:
    """Joins the caller's trace, enforces authorization, records Istio's metrics."""

    def __init__(self, app: ASGIApp, inbound: Inbound | None = None) -> None:
        self.app = app
        self.inbound = inbound or Inbound()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        server = scope.get("server") or ("", 0)
        client = scope.get("client") or (None, 0)
        call = self.inbound.begin(
            InboundRequest(
                method=scope["method"],
                path=scope["path"],
                headers=headers,
                scheme=scope.get("scheme", "http"),
                host=str(server[0] or ""),
                port=int(server[1] or 0),
                peer_identity=peer_identity_from_scope(scope),
                remote_ip=client[0],
                protocol="grpc"
                if headers.get("content-type", "").startswith("application/grpc")
                else "http",
            )
        )
        request_id = call.context.request_id or ""
        reply = call.decision.reply
        if reply is not None:  # the mesh answers (local rate limit)
            head = [(k.encode(), v.encode()) for k, v in reply.headers]
            head += [
                (b"content-length", str(len(reply.body)).encode()),
                (b"x-request-id", request_id.encode()),
            ]
            await send({"type": "http.response.start", "status": reply.status, "headers": head})
            await send({"type": "http.response.body", "body": reply.body})
            call.finish(reply.status)
            return
        if call.denied:
            denied = call.decision.status
            await send(
                {
                    "type": "http.response.start",
                    "status": denied,
                    "headers": [
                        (b"content-type", b"text/plain"),
                        (b"x-request-id", request_id.encode()),
                    ],
                }
            )
            body = DENIED_BODY if denied == 403 else b"not serving"
            await send({"type": "http.response.body", "body": body})
            call.finish(denied)
            return
        status = 500

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode("latin-1")),
                ]
            await send(message)

        error: BaseException | None = None
        if call.decision.jwt is not None:  # the listener's jwt_authn verified a token
            scope = dict(scope)
            scope["headers"] = asgi_headers(scope["headers"], call.decision.jwt)
            scope[SCOPE_KEY] = call.decision.jwt
        try:
            with call.scope():
                await self.app(scope, receive, send_and_watch)
        except BaseException as exc:
            error = exc
            raise
        finally:
            call.finish(status, error)
