"""What an httpx application sees when the mesh cannot carry a request.

Every class is a subclass of the httpx exception an application already handles
(``except httpx.TransportError`` keeps working) and carries ``cluster``, ``reason`` and
the engine's ``mesh_error``.
"""

from __future__ import annotations

import httpx

from .._errors import CircuitBreakerOpen, MeshError, NoHealthyUpstream, UpstreamTimeout
from ..security import UpstreamTlsError

__all__ = [
    "CircuitBreakerOverflowError",
    "MeshConnectError",
    "MeshTimeoutError",
    "NoHealthyUpstreamError",
    "UpstreamTlsConfigError",
    "mesh_error",
]


class MeshConnectError(httpx.ConnectError):
    """The mesh could not carry the request; ``except httpx.TransportError`` catches it.

    ``cluster`` and ``reason`` (e.g. ``no_healthy_upstream``, ``no_route``,
    ``resolve_timeout``, ``overflow``, ``tls_config``) say where and why.
    """

    def __init__(self, error: MeshError, request: httpx.Request) -> None:
        super().__init__(str(error), request=request)
        self.mesh_error = error
        self.cluster = error.cluster
        self.reason = error.reason


class NoHealthyUpstreamError(MeshConnectError):
    """The cluster had no usable endpoint (Envoy: 503 ``no healthy upstream``)."""


class CircuitBreakerOverflowError(MeshConnectError):
    """The cluster's circuit breaker is full (reason ``overflow``; Envoy: 503 with
    ``x-envoy-overloaded``); ``limit`` names the threshold."""

    def __init__(self, error: MeshError, request: httpx.Request) -> None:
        super().__init__(error, request)
        self.limit = getattr(error, "limit", "")


class UpstreamTlsConfigError(MeshConnectError):
    """The cluster's TLS settings name something this client lacks (reason
    ``tls_config``), such as a certificate provider instance not in the bootstrap."""


class MeshTimeoutError(httpx.TimeoutException):
    """The route timeout passed before the upstream answered (Envoy: 504)."""

    def __init__(self, error: MeshError, request: httpx.Request) -> None:
        super().__init__(str(error), request=request)
        self.mesh_error = error
        self.cluster = error.cluster
        self.reason = error.reason


_BY_TYPE: tuple[tuple[type[MeshError], type[MeshConnectError]], ...] = (
    (CircuitBreakerOpen, CircuitBreakerOverflowError),
    (NoHealthyUpstream, NoHealthyUpstreamError),
    (UpstreamTlsError, UpstreamTlsConfigError),
)


def mesh_error(exc: MeshError, request: httpx.Request) -> httpx.TransportError:
    """The httpx exception an application sees for a mesh failure."""
    if isinstance(exc, UpstreamTimeout):
        return MeshTimeoutError(exc, request)
    for engine_type, httpx_type in _BY_TYPE:
        if isinstance(exc, engine_type):
            return httpx_type(exc, request)
    return MeshConnectError(exc, request)
