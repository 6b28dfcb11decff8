"""httpx transports (compatibility module): see :mod:`meshlib.httpx`."""

from .httpx import (
    AsyncMeshTransport,
    CircuitBreakerOverflowError,
    MeshConnectError,
    MeshTimeoutError,
    MeshTransport,
    NoHealthyUpstreamError,
    UnknownHostPolicy,
    UpstreamTlsConfigError,
)

__all__ = [
    "AsyncMeshTransport",
    "CircuitBreakerOverflowError",
    "MeshConnectError",
    "MeshTimeoutError",
    "MeshTransport",
    "NoHealthyUpstreamError",
    "UnknownHostPolicy",
    "UpstreamTlsConfigError",
]
