"""End-user authentication (Istio's RequestAuthentication) for ASGI, WSGI and gRPC servers.

    rules = [JwtRule.from_istio({"issuer": "https://idp.example", "jwksUri": "https://..."})]
    app.add_middleware(JwtMiddleware, authenticator=JwtAuthenticator(rules))       # ASGI
    app.wsgi_app = JwtWSGIMiddleware(app.wsgi_app, JwtAuthenticator(rules))        # WSGI
    grpc.server(pool, interceptors=[JwtServerInterceptor(JwtAuthenticator(rules))])

A request with an invalid token gets 401 (gRPC: UNAUTHENTICATED) with Envoy's message and
``www-authenticate: Bearer realm="<url>", error="invalid_token"``; a request without one
passes on, unauthenticated, to authorization and the application. The result is
``current_jwt()`` in the handler (and ``scope["meshlib.jwt"]`` / ``environ["meshlib.jwt"]``):
``principal`` is Istio's ``request.auth.principal`` (``iss/sub``). Put these middlewares
outside (before) the mesh's authorization middleware. Requires ``meshlib[jwt]`` (PyJWT).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from typing import Any

import grpc
import grpc.aio

from ._jwt import JwksCache, JwtAuthenticator, JwtResult, NeedsFetch
from ._jwt_context import SCOPE_KEY, asgi_headers, current, current_jwt, wsgi_apply
from ._jwt_rules import JwtConfigError, JwtHeader, JwtRule
from .grpc_server import _kinds, _rebuild

__all__ = [
    "JwksCache",
    "JwtAioServerInterceptor",
    "JwtAuthenticator",
    "JwtConfigError",
    "JwtHeader",
    "JwtMiddleware",
    "JwtResult",
    "JwtRule",
    "JwtServerInterceptor",
    "JwtWSGIMiddleware",
    "NeedsFetch",
    "current_jwt",
]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def _challenge(url: str) -> list[tuple[str, str]]:
    return [
        ("content-type", "text/plain"),
        ("www-authenticate", f'Bearer realm="{url}", error="invalid_token"'),
    ]


class JwtMiddleware:
    """Pure ASGI middleware; HTTP requests only (websockets and lifespan pass)."""

    def __init__(self, app: ASGIApp, authenticator: JwtAuthenticator) -> None:
        self.app = app
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = scope.get("query_string", b"").decode("latin-1")
        result = await _authenticate_async(self.authenticator, scope["method"], headers, query)
        if result.denied:
            host = headers.get("host", "")
            url = f"{scope.get('scheme', 'http')}://{host}{scope.get('path', '/')}"
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [(k.encode(), v.encode()) for k, v in _challenge(url)],
                }
            )
            await send({"type": "http.response.body", "body": result.message.encode()})
            return
        scope = dict(scope)
        scope["headers"] = asgi_headers(scope["headers"], result)
        scope[SCOPE_KEY] = result
        with current(result):
            await self.app(scope, receive, send)


class JwtWSGIMiddleware:
    """WSGI middleware: 401 for an invalid token, the result in ``environ["meshlib.jwt"]``."""

    def __init__(self, app: WSGIApp, authenticator: JwtAuthenticator) -> None:
        self.app = app
        self.authenticator = authenticator

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        headers = {
            key[5:].replace("_", "-").lower(): str(value)
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        result = self.authenticator.authenticate(
            environ.get("REQUEST_METHOD", "GET"), headers, environ.get("QUERY_STRING", "")
        )
        if result.denied:
            url = (
                f"{environ.get('wsgi.url_scheme', 'http')}://{headers.get('host', '')}"
                f"{environ.get('PATH_INFO', '/')}"
            )
            start_response("401 Unauthorized", _challenge(url))
            return [result.message.encode()]
        wsgi_apply(environ, result)
        with current(result):
            # the app's iterable is consumed later by the server; current_jwt() is set
            # while the app builds it, which is where handlers run for Flask and most others
            return self.app(environ, start_response)


async def _authenticate_async(
    authenticator: JwtAuthenticator, method: str, headers: dict[str, str], query: str = ""
) -> JwtResult:
    """On the event loop with cached keys; in a thread when keys must be fetched."""
    try:
        return authenticator.authenticate(method, headers, query, fetch=False)
    except NeedsFetch:
        return await asyncio.to_thread(authenticator.authenticate, method, headers, query)


def _metadata(context: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}


def _grpc_result(authenticator: JwtAuthenticator, context: Any) -> JwtResult:
    return authenticator.authenticate("POST", _metadata(context))


class JwtServerInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """For ``grpc.server(..., interceptors=[...])``: UNAUTHENTICATED for an invalid token
    (in the ``authorization`` metadata by default), ``current_jwt()`` in the handler."""

    def __init__(self, authenticator: JwtAuthenticator) -> None:
        self.authenticator = authenticator

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None:
            return None
        kind, behavior = _kinds(handler)
        authenticator = self.authenticator

        def check(context: Any) -> JwtResult:
            result = _grpc_result(authenticator, context)
            if result.denied:
                context.abort(grpc.StatusCode.UNAUTHENTICATED, result.message)
            return result

        if kind in ("unary_unary", "stream_unary"):

            def unary(request: Any, context: Any) -> Any:
                with current(check(context)):
                    return behavior(request, context)

            return _rebuild(handler, kind, unary)

        def streaming(request: Any, context: Any) -> Iterator[Any]:
            with current(check(context)):
                yield from behavior(request, context)

        return _rebuild(handler, kind, streaming)


class JwtAioServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """For ``grpc.aio.server(interceptors=[...])``; verification runs off the event loop."""

    def __init__(self, authenticator: JwtAuthenticator) -> None:
        self.authenticator = authenticator

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return None
        kind, behavior = _kinds(handler)
        authenticator = self.authenticator

        async def check(context: Any) -> JwtResult:
            result = await _authenticate_async(authenticator, "POST", _metadata(context))
            if result.denied:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, result.message)
            return result

        if kind in ("unary_unary", "stream_unary") or not inspect.isasyncgenfunction(behavior):

            async def unary(request: Any, context: Any) -> Any:
                with current(await check(context)):
                    return await behavior(request, context)

            return _rebuild(handler, kind, unary)

        async def streaming(request: Any, context: Any) -> Any:
            with current(await check(context)):
                async for item in behavior(request, context):
                    yield item

        return _rebuild(handler, kind, streaming)
