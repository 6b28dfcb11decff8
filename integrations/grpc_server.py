"""gRPC server interceptors (grpc.server and grpc.aio.server): the inbound side of the mesh.

    server = grpc.server(pool, interceptors=[MeshServerInterceptor(Inbound(workload="ratings"))])
    server = grpc.aio.server(interceptors=[MeshAioServerInterceptor(Inbound(...))])

Each call joins the caller's trace (W3C/B3 metadata), makes the request context current
for the handler (so outbound mesh calls carry the trace, x-request-id and the remaining
deadline), is authorized by the Inbound's authorizer (denied: PERMISSION_DENIED, before
the handler runs) and is counted with Istio's standard metrics. The caller's SPIFFE ID
comes from the verified client certificate when the server uses mTLS
(``mesh_server_credentials``: the workload certificate, client certificates required).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
import grpc.aio

from meshlib.local_reply import rbac_denied
from meshlib.security import FileWatcherProvider

from ._inbound import Inbound, InboundCall, InboundRequest
from .tls import spiffe_id_from_pem

__all__ = [
    "MeshAioServerInterceptor",
    "MeshServerInterceptor",
    "mesh_server_credentials",
    "peer_identity",
]

DENIED = rbac_denied().message  # Envoy's RBAC filter's words
_HTTP = {0: 200, 7: 403, 16: 401, 12: 501, 5: 404, 4: 504, 14: 503, 8: 429, 1: 499}


def peer_identity(context: Any) -> str | None:
    """The caller's SPIFFE ID from a verified client certificate, or None."""
    try:
        auth = context.auth_context() or {}
    except (AttributeError, ValueError):
        return None
    for key in ("peer_spiffe_id", "x509_subject_alternative_name"):
        for value in auth.get(key, ()):
            text = value.decode() if isinstance(value, bytes) else str(value)
            if text.startswith("spiffe://"):
                return text
    pem = auth.get("x509_pem_cert")  # grpcio builds that list URI SANs nowhere else
    if pem:
        value = pem[0] if isinstance(pem, list | tuple) else pem
        return spiffe_id_from_pem(value)
    return None


def mesh_server_credentials(
    identity: FileWatcherProvider,
    roots: FileWatcherProvider | None = None,
    *,
    require_client_auth: bool = True,
) -> grpc.ServerCredentials:
    """Server credentials for mesh mTLS from the workload's certificate provider.

    ``require_client_auth`` (PeerAuthentication STRICT) refuses callers without a
    certificate chained to the mesh roots. Rotation: new files from the provider are
    used for the next handshakes (``grpc.dynamic_ssl_server_credentials``).
    """
    roots = roots or identity

    def load() -> grpc.ServerCertificateConfiguration:
        files, root_files = identity.current(), roots.current()
        if not (files.certificate_file and files.private_key_file):
            raise ValueError("mesh_server_credentials: the identity provider has no certificate")
        if root_files.ca_certificate_file is None:
            raise ValueError("mesh_server_credentials: the roots provider has no CA file")
        return grpc.ssl_server_certificate_configuration(
            [(files.private_key_file.read_bytes(), files.certificate_file.read_bytes())],
            root_files.ca_certificate_file.read_bytes(),
        )

    state = {"versions": (identity.current().version, roots.current().version)}

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        versions = (identity.current().version, roots.current().version)
        if versions == state["versions"]:
            return None  # unchanged: keep the current configuration
        state["versions"] = versions
        return load()

    return grpc.dynamic_ssl_server_credentials(
        load(), fetch, require_client_authentication=require_client_auth
    )


def _request(details: grpc.HandlerCallDetails, context: Any) -> InboundRequest:
    headers = {k: v for k, v in details.invocation_metadata or () if isinstance(v, str)}
    host, _, port = headers.get(":authority", "").rpartition(":")
    return InboundRequest(
        method="POST",
        path=details.method,
        headers=headers,
        scheme="https" if context is not None and peer_identity(context) else "http",
        host=host,
        port=int(port) if port.isdigit() else 0,
        peer_identity=peer_identity(context) if context is not None else None,
        protocol="grpc",
    )


_CODES = {c.value[0]: c for c in grpc.StatusCode}


def _denial(call: InboundCall) -> tuple[grpc.StatusCode, str]:
    """Finish a denied call: RBAC's PERMISSION_DENIED, or the mesh's own reply (the
    local rate limit: UNAVAILABLE, or RESOURCE_EXHAUSTED when so configured)."""
    reply = call.decision.reply
    if reply is None:
        call.finish(403, grpc_status=7)
        return grpc.StatusCode.PERMISSION_DENIED, DENIED
    call.finish(reply.status, grpc_status=reply.grpc_status)
    return _CODES.get(reply.grpc_status, grpc.StatusCode.UNKNOWN), reply.body.decode()


def _status_of(context: Any, error: BaseException | None) -> int:
    code = context.code() if hasattr(context, "code") else None
    if isinstance(code, grpc.StatusCode):
        return int(code.value[0])
    if isinstance(code, int):
        return code
    return 2 if error is not None else 0  # UNKNOWN for an unhandled exception


def _finish(call: InboundCall, context: Any, error: BaseException | None) -> None:
    status = _status_of(context, error)
    call.finish(_HTTP.get(status, 500), error, grpc_status=status)


def _kinds(handler: grpc.RpcMethodHandler) -> tuple[str, Callable[..., Any]]:
    for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
        behavior = getattr(handler, kind)
        if behavior is not None:
            return kind, behavior
    raise ValueError("a gRPC method handler without a behavior")


_FACTORIES = {
    "unary_unary": grpc.unary_unary_rpc_method_handler,
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}


def _rebuild(handler: grpc.RpcMethodHandler, kind: str, behavior: Any) -> grpc.RpcMethodHandler:
    return _FACTORIES[kind](
        behavior,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class MeshServerInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """For ``grpc.server(..., interceptors=[...])`` (threads)."""

    def __init__(self, inbound: Inbound | None = None) -> None:
        self.inbound = inbound or Inbound()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None:
            return None
        kind, behavior = _kinds(handler)
        inbound = self.inbound

        def begin(context: Any) -> InboundCall:
            call = inbound.begin(_request(details, context))
            if call.denied:
                code, message = _denial(call)
                context.abort(code, message)
            return call

        if kind in ("unary_unary", "stream_unary"):

            def unary(request: Any, context: Any) -> Any:
                call = begin(context)
                error: BaseException | None = None
                try:
                    with call.scope():
                        return behavior(request, context)
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    _finish(call, context, error)

            return _rebuild(handler, kind, unary)

        def streaming(request: Any, context: Any) -> Iterator[Any]:
            call = begin(context)
            error: BaseException | None = None
            try:
                with call.scope():
                    yield from behavior(request, context)
            except BaseException as exc:
                error = exc
                raise
            finally:
                _finish(call, context, error)

        return _rebuild(handler, kind, streaming)


class MeshAioServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """For ``grpc.aio.server(interceptors=[...])`` (asyncio)."""

    def __init__(self, inbound: Inbound | None = None) -> None:
        self.inbound = inbound or Inbound()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return None
        kind, behavior = _kinds(handler)
        inbound = self.inbound

        async def begin(context: Any) -> InboundCall:
            call = inbound.begin(_request(details, context))
            if call.denied:
                code, message = _denial(call)
                await context.abort(code, message)
            return call

        if kind in ("unary_unary", "stream_unary") or not inspect.isasyncgenfunction(behavior):
            # (a streaming handler may also be a coroutine that calls context.write)

            async def unary(request: Any, context: Any) -> Any:
                call = await begin(context)
                error: BaseException | None = None
                try:
                    with call.scope():
                        return await behavior(request, context)
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    _finish(call, context, error)

            return _rebuild(handler, kind, unary)

        async def streaming(request: Any, context: Any) -> AsyncIterator[Any]:
            call = await begin(context)
            error: BaseException | None = None
            try:
                with call.scope():
                    async for item in behavior(request, context):
                        yield item
            except BaseException as exc:
                error = exc
                raise
            finally:
                _finish(call, context, error)

        return _rebuild(handler, kind, streaming)
