"""httpx adapters: sync and async transports that carry requests through the mesh engine."""

from ._async import AsyncMeshTransport
from ._body import DEFAULT_RETRY_BUFFER, RecordingStream
from ._errors import (
    CircuitBreakerOverflowError,
    MeshClosedError,
    MeshConnectError,
    MeshTimeoutError,
    NoHealthyUpstreamError,
    RouteNotFoundError,
    UpstreamConnectError,
    UpstreamResetError,
    UpstreamTlsConfigError,
    reply_error,
    reply_response,
)
from ._exchange import Exchange, endpoint_url
from ._pools import Connector, Connectors, EndpointPools
from ._sync import MeshTransport, UnknownHostPolicy

__all__ = [
    "DEFAULT_RETRY_BUFFER",
    "AsyncMeshTransport",
    "CircuitBreakerOverflowError",
    "Connector",
    "Connectors",
    "EndpointPools",
    "Exchange",
    "MeshClosedError",
    "MeshConnectError",
    "MeshTimeoutError",
    "MeshTransport",
    "NoHealthyUpstreamError",
    "RecordingStream",
    "RouteNotFoundError",
    "UnknownHostPolicy",
    "UpstreamConnectError",
    "UpstreamResetError",
    "UpstreamTlsConfigError",
    "endpoint_url",
    "reply_error",
    "reply_response",
]
