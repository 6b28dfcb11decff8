"""What one attempt came to, in transport-neutral terms.

Adapters translate their client library's result into an Outcome; the resilience layer
(retries, outlier detection, LB feedback) reads only this.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = ["Outcome", "OutcomeKind"]


class OutcomeKind(Enum):
    RESPONSE = "response"  # the upstream answered (any status)
    CONNECT_FAILURE = "connect_failure"  # could not connect (refused, TLS handshake failed)
    RESET = "reset"  # connection reset / closed before a response
    TIMEOUT = "timeout"  # per-try or overall timeout fired before the response headers
    LOCAL = "local"  # failed locally (fault abort, overflow) without reaching the upstream


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: OutcomeKind
    status: int | None = None  # HTTP status, when the upstream answered
    grpc_status: int | None = None  # gRPC status code, when known
    latency: float = 0.0  # seconds from attempt start to response headers (or failure)

    @property
    def upstream_failure(self) -> bool:
        """Envoy's 'externally originated' failure: 5xx or a connection-level failure."""
        if self.kind is OutcomeKind.RESPONSE:
            return self.status is not None and self.status >= 500
        return self.kind is not OutcomeKind.LOCAL
