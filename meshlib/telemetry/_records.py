"""One call and its attempts as the telemetry seam records them (spans and metrics).

The data path only queues plain facts (``Telemetry.tally``: an atomic list append, no
lock, no label tuple, no histogram bucket); ``_tally`` folds them into the stats registry
when it is read. Spans and OpenTelemetry metrics are worked on only while an SDK is
configured.
"""

from __future__ import annotations

import logging
import time
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .._call import Call
from .._outcome import Outcome
from . import _semconv as sc
from ._access_log import ACCESS_LOG, log_call
from ._semconv import response_flags
from ._tally import BACKLOG, attempt_labels, call_labels

if TYPE_CHECKING:
    from ._telemetry import Telemetry

__all__ = ["AttemptRecord", "CallRecord"]

_LOCAL_STATUS = {
    "UO": 503,
    "UH": 503,
    "UF": 503,
    "UC": 503,
    "UR": 503,
    "UT": 504,
    "NR": 404,
    "DO": 503,
}
_perf_counter = time.perf_counter
_access_on = ACCESS_LOG.isEnabledFor
_INFO = logging.INFO


class CallRecord:
    """One logical call: its span, timing and what its attempts came to (``ended``: its
    ``end()`` was called; ``elapsed``: its duration in seconds, once ended)."""

    __slots__ = (
        "_otel",
        "_t",
        "address",
        "attempts",
        "call",
        "cluster",
        "elapsed",
        "ended",
        "flags",
        "grpc_status",
        "last",
        "protocol",
        "route_name",
        "span",
        "start",
        "status",
    )

    def __init__(self, telemetry: Telemetry, call: Call, protocol: str) -> None:
        self._t = telemetry
        self.call = call
        self.protocol = protocol
        self.route_name = self.cluster = self.address = ""
        self.attempts = 0
        self.last: Outcome | None = None
        self.ended = False
        self.elapsed = 0.0
        self.status: int | None = None
        self.grpc_status: int | None = None
        self.flags: str | None = None
        self.span: trace.Span | None = None
        self._otel = None
        start = self.start = _perf_counter()
        if start >= telemetry.quiet_until and telemetry.live(start):
            self._otel = telemetry.otel()  # looked up once per call
            tracer = telemetry.tracer()
            if tracer is not None:
                self.span = tracer.start_span(
                    _span_name(call, protocol),
                    kind=SpanKind.CLIENT,
                    attributes=_call_attrs(call, protocol),
                )

    def route(self, route_name: str, cluster: str) -> None:
        """The routing decision (``plan.route_name``, ``plan.cluster``)."""
        self.route_name, self.cluster = route_name, cluster

    def attempt(
        self,
        endpoint: Any,
        cluster: str = "",
        locality: str = "",
        attempt_number: int = 0,
        retry_reason: str = "",
    ) -> AttemptRecord:
        """Begin one attempt to ``endpoint`` (an EndpointState or an ``ip:port``);
        ``attempt_number`` counts from 1 (0: the next one); ``retry_reason`` says why
        the previous attempt was retried (see ``retry_reason()``)."""
        number = self.attempts = attempt_number or self.attempts + 1
        if cluster:
            self.cluster = cluster
        else:
            cluster = self.cluster
        address = self.address = endpoint if isinstance(endpoint, str) else endpoint.address
        otel = self._otel
        if otel is not None and number > 1:
            reason = retry_reason or "unknown"
            otel.retries.add(1, otel.attrs(("cluster", cluster), ("reason", reason)))
        return AttemptRecord(self, address, cluster, locality, retry_reason)

    def end(
        self,
        status: int | None = None,
        grpc_status: int | None = None,
        error: BaseException | None = None,
        retries: int | None = None,
        flags: str | None = None,
    ) -> None:
        """The call is over: the status the application sees, or the error it gets;
        ``flags``: its Envoy response flags as the exchange core decided them (a local
        reply's, ``DI`` after an injected delay; None: from ``error``, else ``-``)."""
        if self.ended:
            return
        self.ended = True
        self.elapsed = _perf_counter() - self.start
        self.status, self.grpc_status = status, grpc_status
        if flags is not None:
            self.flags = flags
            if "UO" in flags:
                self._t.breaker_overflow(self.cluster or str(getattr(error, "cluster", "")))
        if error is not None or self.span is not None or self._otel is not None:
            self._end_observed(status, grpc_status, error, retries)
        if _access_on(_INFO):
            log_call(self)
        tally = self._t.tally
        calls = tally.calls
        calls.append(
            (
                self.cluster, self.call.authority, self.protocol, self.status,
                self.grpc_status, self.flags, self.elapsed, self.route_name,
            )
        )  # fmt: skip
        if len(calls) >= BACKLOG:
            tally.fold()

    def _end_observed(
        self,
        status: int | None,
        grpc_status: int | None,
        error: BaseException | None,
        retries: int | None,
    ) -> None:
        """``end`` for an error, or with spans or OpenTelemetry metrics to record."""
        t = self._t
        reason = ""
        if error is not None:
            reason = str(getattr(error, "reason", "") or "")
            flags = self.flags
            if flags is None:
                flags = self.flags = response_flags(reason, self.last)
                if reason == "overflow":
                    t.breaker_overflow(self.cluster or str(getattr(error, "cluster", "")))
            if status is None:
                self.status = getattr(error, "http_status", None) or _LOCAL_STATUS.get(flags, 0)
            if self.protocol == "grpc" and grpc_status is None:
                self.grpc_status = getattr(error, "grpc_status", None) or 14
        otel = self._otel
        if otel is not None:
            code, grpc, flags = call_labels(self.status, self.grpc_status, self.flags)
            key = t.registry.istio_key(
                t.workload, t.namespace, self.cluster, self.call.authority, self.protocol,
                code, grpc, flags,
            )  # fmt: skip
            attrs = otel.istio_attrs(key)
            otel.requests.add(1, attrs)
            otel.duration.record(self.elapsed * 1000.0, attrs)
        span = self.span
        if span is not None:
            if span.is_recording():
                retries = max(0, self.attempts - 1) if retries is None else retries
                self._finish_span(span, status, grpc_status, error, retries, reason)
            span.end()

    def _finish_span(
        self,
        span: trace.Span,
        status: int | None,
        grpc_status: int | None,
        error: BaseException | None,
        retries: int,
        reason: str,
    ) -> None:
        failed = False
        if status is not None and self.protocol == "http":
            span.set_attribute(sc.HTTP_STATUS, status)
            failed = status >= 400
            if failed:
                span.set_attribute(sc.ERROR_TYPE, str(status))
        if grpc_status is not None:
            span.set_attribute(sc.RPC_GRPC_STATUS, grpc_status)
            failed = grpc_status != 0
            if failed:
                span.set_attribute(sc.ERROR_TYPE, sc.GRPC_CODES.get(grpc_status, str(grpc_status)))
        if error is not None:
            failed = True
            span.set_attribute(sc.ERROR_TYPE, _qualname(error))
            span.record_exception(error)
        span.set_attributes(
            {
                sc.MESH_ROUTE: self.route_name,
                sc.MESH_CLUSTER: self.cluster,
                sc.MESH_UPSTREAM: self.address,
                sc.MESH_RETRY_COUNT: retries,
                sc.MESH_OUTCOME: reason or ("failure" if failed else "success"),
                sc.MESH_RESPONSE_FLAGS: self.flags or "-",
            }
        )
        if failed:
            span.set_status(Status(StatusCode.ERROR, reason or None))


class AttemptRecord:
    """One attempt of a call: a child span and the per-endpoint metrics (``outcome``:
    what it came to, once ended; its ``latency`` is the attempt's time)."""

    __slots__ = (
        "_call",
        "address",
        "cluster",
        "locality",
        "number",
        "outcome",
        "reason",
        "span",
    )

    def __init__(
        self, record: CallRecord, address: str, cluster: str, locality: str, reason: str
    ) -> None:
        self._call = record
        self.address = address
        self.cluster = cluster
        self.locality = locality
        self.number = record.attempts
        self.reason = reason
        self.outcome: Outcome | None = None
        self.span: trace.Span | None = None
        parent = record.span
        if parent is not None and parent.is_recording():
            self._start_span(record, parent)
        otel = record._otel
        if otel is not None:
            otel.active.add(1, otel.attrs(("cluster", cluster)))
        t = record._t
        t.tally.started.append(cluster)
        if self.number > 1:
            t.registry.retries.add((cluster, reason or "unknown"))

    def _start_span(self, record: CallRecord, parent: trace.Span) -> None:
        tracer = record._t.tracer()
        assert tracer is not None
        address = self.address
        host, _, port = address.rpartition(":")
        attrs: dict[str, Any] = {
            sc.PEER_ADDRESS: host.strip("[]"),
            sc.PEER_PORT: int(port) if port.isdigit() else 0,
            sc.MESH_UPSTREAM: address,
            sc.MESH_CLUSTER: self.cluster,
            sc.MESH_LOCALITY: self.locality,
            sc.MESH_ATTEMPT: self.number,
        }
        if self.number > 1:
            attrs[sc.HTTP_RESEND] = self.number - 1
            attrs[sc.MESH_RETRY_REASON] = self.reason or "unknown"
        attrs.update(_call_attrs(record.call, record.protocol))
        self.span = tracer.start_span(
            f"{_span_name(record.call, record.protocol)} attempt",
            context=trace.set_span_in_context(parent),
            kind=SpanKind.CLIENT,
            attributes=attrs,
        )

    def inject(self, headers: MutableMapping[str, str]) -> None:
        """Write the trace context (the globally configured propagators: W3C by
        default) of this attempt's span into the outgoing request headers."""
        span = self.span or self._call.span
        if span is None or not span.get_span_context().is_valid:
            return
        propagate.inject(headers, context=trace.set_span_in_context(span))

    def end(self, outcome: Outcome) -> None:
        """What the attempt came to (the same Outcome the attempt loop records; its
        ``latency`` is the attempt's time)."""
        record = self._call
        record.last = self.outcome = outcome
        kind: str = outcome.kind._value_  # not .value (a slow descriptor)
        record._t.tally.attempts.append(
            (self.cluster, self.address, kind, outcome.status, outcome.latency)
        )
        if record._otel is not None or self.span is not None:
            self._end_observed(record, outcome, *attempt_labels(kind, outcome.status))

    def _end_observed(self, record: CallRecord, outcome: Outcome, kind: str, code: str) -> None:
        otel = record._otel
        if otel is not None:
            cluster, address = self.cluster, self.address
            otel.active.add(-1, otel.attrs(("cluster", cluster)))
            otel.upstream_rq.add(
                1,
                otel.attrs(
                    ("cluster", cluster),
                    ("endpoint", address),
                    ("outcome", kind),
                    ("response_code", code),
                ),
            )
            otel.upstream_time.record(
                outcome.latency * 1000.0, otel.attrs(("cluster", cluster), ("endpoint", address))
            )
        span = self.span
        if span is None:
            return
        if outcome.status is not None and record.protocol == "http":
            span.set_attribute(sc.HTTP_STATUS, outcome.status)
        if outcome.grpc_status is not None:
            span.set_attribute(sc.RPC_GRPC_STATUS, outcome.grpc_status)
        span.set_attribute(sc.MESH_OUTCOME, kind)
        if outcome.upstream_failure or not outcome.reached_upstream:
            span.set_attribute(sc.ERROR_TYPE, code if outcome.http_5xx else kind)
            span.set_status(Status(StatusCode.ERROR, kind))
        span.end()


def _span_name(call: Call, protocol: str) -> str:
    if protocol == "grpc":
        return call.path.split("?", 1)[0].lstrip("/") or "grpc"
    return call.method or "HTTP"


def _call_attrs(call: Call, protocol: str) -> dict[str, Any]:
    host, _, port = call.authority.rpartition(":")
    if not host:
        host, port = call.authority, ""
    attrs: dict[str, Any] = {
        sc.SERVER_ADDRESS: host.strip("[]"),
        sc.SERVER_PORT: int(port) if port.isdigit() else 0,
    }
    if protocol == "grpc":
        service, _, method = call.path.lstrip("/").partition("/")
        attrs[sc.RPC_SYSTEM] = "grpc"
        attrs[sc.RPC_SERVICE] = service
        attrs[sc.RPC_METHOD] = method
    else:
        attrs[sc.HTTP_METHOD] = call.method
        attrs[sc.URL_FULL] = f"{call.scheme}://{call.authority}{call.path}"
    return attrs


def _qualname(error: BaseException) -> str:
    cls = type(error)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"
