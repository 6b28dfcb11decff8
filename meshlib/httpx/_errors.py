"""What an httpx application sees when the mesh answers a request itself.

By default (``Mesh(local_replies="envoy")``) that is a response shaped as Envoy's local
reply (:func:`reply_response`). With ``local_replies="raise"`` it is one of these
exceptions (:func:`reply_error`), each a subclass of the httpx exception an application
already handles (``except httpx.TransportError`` keeps working) and carrying
``cluster``, ``reason``, ``response_flag``, the :class:`~meshlib.local_reply.LocalReply`
and the engine's ``mesh_error`` (when there is one).
"""

from __future__ import annotations

import httpx

from .._errors import MeshClosed, MeshError
from ..local_reply import LocalReply, for_error

__all__ = [
    "CircuitBreakerOverflowError",
    "MeshClosedError",
    "MeshConnectError",
    "MeshTimeoutError",
    "NoHealthyUpstreamError",
    "RouteNotFoundError",
    "UpstreamConnectError",
    "UpstreamResetError",
    "UpstreamTlsConfigError",
    "mesh_error",
    "reply_error",
    "reply_response",
]


class _Reply:
    """The attributes every mesh exception carries."""

    reply: LocalReply
    mesh_error: MeshError | None
    cluster: str
    reason: str
    response_flag: str

    def _carry(self, reply: LocalReply) -> None:
        self.reply = reply
        self.mesh_error = reply.error
        self.cluster = reply.cluster
        self.reason = reply.reason
        self.response_flag = reply.flag


class MeshConnectError(_Reply, httpx.ConnectError):
    """The mesh could not carry the request; ``except httpx.TransportError`` catches it.

    ``cluster``, ``reason`` (e.g. ``no_healthy_upstream``, ``no_route``,
    ``resolve_timeout``, ``overflow``, ``tls_config``) and ``response_flag`` (Envoy's:
    ``UH``, ``NR``, ``UO``...) say where and why. Constructed from a MeshError or a
    LocalReply.
    """

    def __init__(self, error: MeshError | LocalReply, request: httpx.Request) -> None:
        reply = error if isinstance(error, LocalReply) else for_error(error)
        super().__init__(reply.message, request=request)
        self._carry(reply)


class RouteNotFoundError(MeshConnectError):
    """No route matched (Envoy: 404, flag NR)."""


class NoHealthyUpstreamError(MeshConnectError):
    """The cluster had no usable endpoint (Envoy: 503 ``no healthy upstream``, UH)."""


class CircuitBreakerOverflowError(MeshConnectError):
    """The cluster's circuit breaker is full (reason ``overflow``; Envoy: 503 with
    ``x-envoy-overloaded``, UO), or drop_overloads dropped the request (DO/UDO);
    ``limit`` names the threshold."""

    def __init__(self, error: MeshError | LocalReply, request: httpx.Request) -> None:
        super().__init__(error, request)
        self.limit = getattr(self.mesh_error, "limit", "")


class UpstreamTlsConfigError(MeshConnectError):
    """The cluster's TLS settings name something this client lacks (reason
    ``tls_config``), such as a certificate provider instance not in the bootstrap."""


class UpstreamConnectError(_Reply, httpx.ConnectError):
    """The endpoint refused the connection (flag UF; ``URX,UF`` after retries): the
    endpoint's failure, not the mesh's (not a MeshConnectError)."""

    def __init__(self, reply: LocalReply, request: httpx.Request) -> None:
        super().__init__(reply.message, request=request)
        self._carry(reply)


class UpstreamResetError(_Reply, httpx.RemoteProtocolError):
    """The connection was reset or closed before a response (flag UC/UR, URX after
    retries)."""

    def __init__(self, reply: LocalReply, request: httpx.Request) -> None:
        super().__init__(reply.message, request=request)
        self._carry(reply)


class MeshTimeoutError(_Reply, httpx.TimeoutException):
    """The route or per-try timeout passed before the upstream answered (Envoy: 504
    ``upstream request timeout``, UT)."""

    def __init__(self, error: MeshError | LocalReply, request: httpx.Request) -> None:
        reply = error if isinstance(error, LocalReply) else for_error(error)
        super().__init__(reply.message, request=request)
        self._carry(reply)


class MeshClosedError(_Reply, httpx.TransportError):
    """The request was made after ``Mesh.close()``: the mesh no longer routes (reason
    ``closed``). Always raised, whatever ``local_replies`` says."""

    def __init__(self, request: httpx.Request) -> None:
        reply = LocalReply(503, b"", "UH", "closed")
        super().__init__("the mesh is closed: Mesh.close() was called", request=request)
        self._carry(reply)


_BY_FLAG: dict[str, type[MeshConnectError] | type[UpstreamConnectError]] = {
    "NR": RouteNotFoundError,
    "UH": NoHealthyUpstreamError,
    "UO": CircuitBreakerOverflowError,
    "DO": CircuitBreakerOverflowError,
    "UDO": CircuitBreakerOverflowError,
    "UF": UpstreamConnectError,
}


def reply_error(
    reply: LocalReply, request: httpx.Request, cause: BaseException | None = None
) -> httpx.TransportError:
    """The exception ``local_replies="raise"`` gives for ``reply``; ``cause`` (the last
    attempt's own error, if any) is named in its message and chained."""
    flag = reply.flag.rsplit(",", 1)[-1]
    error: httpx.TransportError
    if flag == "UT":
        error = MeshTimeoutError(reply, request)
    elif flag in ("UC", "UR"):
        error = UpstreamResetError(reply, request)
    elif reply.reason == "tls_config":
        error = UpstreamTlsConfigError(reply, request)
    else:
        error = _BY_FLAG.get(flag, MeshConnectError)(reply, request)
    if cause is not None:
        error.args = (f"{error.args[0]} ({cause})" if error.args else str(cause),)
        error.__cause__ = cause
    return error


def reply_response(reply: LocalReply, request: httpx.Request) -> httpx.Response:
    """``reply`` as the response Envoy sends: status, body, content-type and -length,
    ``x-envoy-*`` headers (no content-length on a 204, as Envoy and RFC 9110)."""
    headers = list(reply.headers)
    if reply.status != 204:
        headers.append(("content-length", str(len(reply.body))))
    response = httpx.Response(reply.status, headers=headers, content=reply.body, request=request)
    response.extensions["meshlib.local_reply"] = reply
    return response


def mesh_error(exc: MeshError, request: httpx.Request) -> httpx.TransportError:
    """The httpx exception for a mesh failure decided before routing (resolve timeout,
    an unknown host with ``unknown_hosts="fail"``, a closed mesh)."""
    if isinstance(exc, MeshClosed):
        return MeshClosedError(request)
    if exc.reason in ("resolve_timeout", "unknown_host", "listener_error"):
        return MeshConnectError(exc, request)
    return reply_error(for_error(exc), request)
