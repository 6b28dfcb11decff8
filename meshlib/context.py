"""Request context carried across hops: trace context, baggage, x-request-id, deadline.

Inbound middleware (``meshlib.integrations``) extracts it from the incoming request and
holds it in a contextvar for the duration of the handler; every outbound mesh call made
meanwhile injects it (W3C traceparent/tracestate/baggage and B3, as Istio propagates),
carries the x-request-id, and is bounded by the caller's remaining deadline.
"""

from __future__ import annotations

import contextvars
import re
import time
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass

from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.b3 import B3MultiFormat, B3SingleFormat
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = [
    "RequestContext",
    "current_request",
    "deadline_from_headers",
    "extract_trace",
    "inject_outbound",
    "request_scope",
]

# Extraction: B3 first, W3C last so traceparent wins when both are present.
_EXTRACT = CompositePropagator(
    [B3SingleFormat(), B3MultiFormat(), TraceContextTextMapPropagator(), W3CBaggagePropagator()]
)
# Injection: W3C for OpenTelemetry peers, B3 multi-header for Envoy/Istio/Zipkin peers.
_INJECT = CompositePropagator(
    [TraceContextTextMapPropagator(), W3CBaggagePropagator(), B3MultiFormat()]
)

_GRPC_TIMEOUT = re.compile(r"^(\d{1,8})([HMSmun])$")
_GRPC_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What an inbound request hands on to the outbound calls its handler makes."""

    request_id: str | None = None
    deadline: float | None = None  # time.monotonic() by which the caller gives up
    peer_identity: str | None = None  # the caller's SPIFFE ID under mTLS

    def remaining(self) -> float | None:
        """Seconds left before the caller's deadline (never negative), or None."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())


_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "meshlib_request", default=None
)


def current_request() -> RequestContext | None:
    """The inbound request being handled in this context, if any."""
    return _current.get()


@contextmanager
def request_scope(ctx: RequestContext, trace: otel_context.Context) -> Iterator[None]:
    """Make ``ctx`` and the extracted trace context current for the block."""
    token = _current.set(ctx)
    otel_token = otel_context.attach(trace)
    try:
        yield
    finally:
        otel_context.detach(otel_token)
        _current.reset(token)


def extract_trace(headers: Mapping[str, str]) -> otel_context.Context:
    """The trace context (and baggage) an incoming request carries; lower-case keys."""
    return _EXTRACT.extract(carrier=headers)


def deadline_from_headers(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The caller's deadline from ``grpc-timeout`` or ``x-envoy-expected-rq-timeout-ms``."""
    now = time.monotonic() if now is None else now
    grpc_timeout = headers.get("grpc-timeout")
    if grpc_timeout:
        m = _GRPC_TIMEOUT.match(grpc_timeout.strip())
        if m:
            return now + int(m.group(1)) * _GRPC_UNITS[m.group(2)]
    envoy = headers.get("x-envoy-expected-rq-timeout-ms")
    if envoy and envoy.strip().isdigit():
        return now + int(envoy.strip()) / 1000.0
    return None


def inject_outbound(headers: MutableMapping[str, str]) -> float | None:
    """Add trace headers and x-request-id of the current context to an outbound request.

    Returns the seconds left of the inbound caller's deadline (None when there is none),
    for the caller to cap its timeout with and to send on.
    """
    current = otel_context.get_current()
    if current and (  # an empty context (the usual case) has nothing to propagate
        trace.get_current_span(current).get_span_context().is_valid or baggage.get_all(current)
    ):
        _INJECT.inject(headers, context=current)
    ctx = _current.get()
    if ctx is None:
        return None
    if ctx.request_id and "x-request-id" not in headers:
        headers["x-request-id"] = ctx.request_id
    return ctx.remaining()
