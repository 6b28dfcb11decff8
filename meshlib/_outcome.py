"""What one attempt came to, in transport-neutral terms.

Adapters translate their client library's result into an Outcome; the resilience layer
(retries, outlier detection, LB feedback, the per-endpoint breaker) reads only this.
The classification follows Envoy's outlier detection: HTTP 5xx answers are externally
originated errors (502/503/504 are also gateway failures); connect failures, resets and
timeouts are locally originated errors; LOCAL outcomes (fault aborts, overflow) never
reached the endpoint and count as nothing.

``refused`` marks a RESET that was an HTTP/2 REFUSED_STREAM: the server declined the
stream before processing it (retry_on ``refused-stream``); :func:`refused_stream` tells
an h2 client library's error so.
"""

from __future__ import annotations

from enum import Enum

from h2.errors import ErrorCodes
from h2.events import StreamReset

__all__ = ["Outcome", "OutcomeKind", "refused_stream"]

_GATEWAY = frozenset({502, 503, 504})


class OutcomeKind(Enum):
    RESPONSE = "response"  # the upstream answered (any status)
    CONNECT_FAILURE = "connect_failure"  # could not connect (refused, TLS handshake failed)
    RESET = "reset"  # connection reset / closed before a response
    TIMEOUT = "timeout"  # per-try or overall timeout fired before the response headers
    LOCAL = "local"  # failed locally (fault abort, overflow) without reaching the upstream


class Outcome:
    """How one attempt ended. A plain slotted class (one per attempt, so cheaper than a
    frozen dataclass); treat it as immutable."""

    __slots__ = ("grpc_status", "kind", "latency", "refused", "status")

    def __init__(
        self,
        kind: OutcomeKind,
        status: int | None = None,
        grpc_status: int | None = None,
        latency: float = 0.0,
        refused: bool = False,
    ) -> None:
        self.kind = kind
        self.status = status  # HTTP status, when the upstream answered
        self.grpc_status = grpc_status  # gRPC status code, when known
        self.latency = latency  # seconds from attempt start to response headers (or failure)
        self.refused = refused  # a RESET by HTTP/2 REFUSED_STREAM (nothing was processed)

    def _fields(self) -> tuple[object, ...]:
        return (self.kind, self.status, self.grpc_status, self.latency, self.refused)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Outcome)
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return (
            f"Outcome(kind={self.kind!r}, status={self.status!r}, "
            f"grpc_status={self.grpc_status!r}, latency={self.latency!r}, "
            f"refused={self.refused!r})"
        )

    @property
    def upstream_failure(self) -> bool:
        """Envoy's 'externally originated' failure: 5xx or a connection-level failure."""
        if self.kind is OutcomeKind.RESPONSE:
            return self.status is not None and self.status >= 500
        return self.kind is not OutcomeKind.LOCAL

    @property
    def reached_upstream(self) -> bool:
        """False for LOCAL outcomes, which no endpoint statistic should see."""
        return self.kind is not OutcomeKind.LOCAL

    @property
    def local_origin_failure(self) -> bool:
        """Connect failure, reset or timeout: the error originated on this side."""
        return self.kind in (OutcomeKind.CONNECT_FAILURE, OutcomeKind.RESET, OutcomeKind.TIMEOUT)

    @property
    def http_5xx(self) -> bool:
        return self.kind is OutcomeKind.RESPONSE and self.status is not None and self.status >= 500

    @property
    def gateway_failure(self) -> bool:
        """502, 503 or 504 from the upstream."""
        return self.kind is OutcomeKind.RESPONSE and self.status in _GATEWAY


def refused_stream(exc: BaseException) -> bool:
    """True when ``exc`` (or an exception it was raised from) carries an h2
    ``StreamReset`` event with error code REFUSED_STREAM, as httpcore's HTTP/2 connection
    raises it (``RemoteProtocolError(event)``, re-raised by httpx ``from`` it)."""
    seen = 0
    cause: BaseException | None = exc
    while cause is not None and seen < 8:  # bounded: a cause chain can be cyclic
        for arg in cause.args:
            if isinstance(arg, StreamReset) and arg.error_code == ErrorCodes.REFUSED_STREAM:
                return True
        cause = cause.__cause__ or cause.__context__
        seen += 1
    return False
