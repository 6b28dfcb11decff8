"""Framework-neutral inbound logic: context, server span, authorization, Istio metrics.

The ASGI and WSGI middleware are thin drivers of :class:`Inbound`: they turn the
framework's request into an :class:`InboundRequest`, call :meth:`Inbound.begin`, run
the handler inside :meth:`InboundCall.scope` (or answer 403 when denied), then call
:meth:`InboundCall.finish` with the status.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from meshlib.context import RequestContext, deadline_from_headers, extract_trace, request_scope
from meshlib.local_reply import LocalReply
from meshlib.telemetry._metrics import process_instruments

from ._jwt_context import current

if TYPE_CHECKING:
    from meshlib.telemetry import Telemetry

__all__ = [
    "Authorizer",
    "AuthzDecision",
    "Inbound",
    "InboundCall",
    "InboundRequest",
    "spiffe_parts",
]

INSTRUMENTATION = "meshlib.integrations"


@dataclass(frozen=True, slots=True)
class InboundRequest:
    """An incoming request as authorization and telemetry see it; header keys lower-case."""

    method: str
    path: str
    headers: Mapping[str, str]
    scheme: str = "http"
    host: str = ""
    port: int = 0
    peer_identity: str | None = None  # SPIFFE ID from the verified client certificate
    protocol: str = "http"  # "http" or "grpc"
    remote_ip: str | None = None  # the connection's peer address (never from a header)


@dataclass(frozen=True, slots=True)
class AuthzDecision:
    allowed: bool
    policy: str = ""  # the policy that decided, for logs and metrics
    reason: str = ""
    status: int = 403  # what a denied HTTP caller gets (503 while not serving)
    reply: LocalReply | None = None  # the mesh's whole answer instead (local rate limit)
    jwt: Any = None  # the request's JwtResult when the listener validates JWTs


class Authorizer(Protocol):
    """The inbound authorization seam (the mesh's RBAC policy implements it)."""

    def check(self, request: InboundRequest) -> AuthzDecision: ...


def spiffe_parts(identity: str | None) -> tuple[str, str]:
    """(namespace, service account) from ``spiffe://td/ns/NS/sa/SA``; unknowns as 'unknown'."""
    if identity and identity.startswith("spiffe://"):
        parts = identity.split("/")
        if len(parts) >= 7 and parts[3] == "ns" and parts[5] == "sa":
            return parts[4], parts[6]
    return "unknown", "unknown"


@dataclass
class InboundCall:
    """One request in flight on the server side."""

    inbound: Inbound
    request: InboundRequest
    context: RequestContext
    span: trace.Span
    trace_context: otel_context.Context
    decision: AuthzDecision
    started: float = field(default_factory=time.perf_counter)

    @property
    def denied(self) -> bool:
        return not self.decision.allowed

    @contextmanager
    def scope(self) -> Iterator[None]:
        """Run the handler with the request context and the server span current."""
        ctx = trace.set_span_in_context(self.span, self.trace_context)
        with request_scope(self.context, ctx), current(self.decision.jwt):
            yield

    def finish(
        self, status: int, error: BaseException | None = None, grpc_status: int | None = None
    ) -> None:
        """End the span and record Istio's standard request metrics."""
        elapsed_ms = (time.perf_counter() - self.started) * 1000.0
        self.span.set_attribute("http.response.status_code", status)
        if error is not None:
            self.span.record_exception(error)
        if error is not None or status >= 500:
            self.span.set_status(Status(StatusCode.ERROR))
        self.inbound.record(self, status, elapsed_ms, grpc_status)
        self.span.end()  # last: a finished span means the request is fully accounted


class Inbound:
    """Server-side mesh behaviour for one workload.

    ``workload``/``namespace``/``service`` label Istio's metrics as the destination;
    ``authorizer`` (optional) decides before the handler runs. The metrics also go to
    ``telemetry`` (``mesh.telemetry``: that mesh's admin ``/stats``), or without one to
    the process's inbound registry, which every admin server renders.
    """

    def __init__(
        self,
        *,
        workload: str = "unknown",
        namespace: str = "unknown",
        service: str = "unknown",
        authorizer: Authorizer | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.workload, self.namespace, self.service = workload, namespace, service
        self._registry = telemetry.inbound if telemetry is not None else process_instruments()
        self.authorizer = authorizer
        self._tracer = trace.get_tracer(INSTRUMENTATION, tracer_provider=tracer_provider)
        meter = metrics.get_meter(INSTRUMENTATION, meter_provider=meter_provider)
        self._requests = meter.create_counter(
            "istio_requests_total", unit="1", description="Requests handled, Istio's labels"
        )
        self._duration = meter.create_histogram(
            "istio_request_duration_milliseconds", unit="ms", description="Request duration"
        )
        self._denied = meter.create_counter(
            "meshlib_inbound_denied_total", unit="1", description="Requests denied by RBAC"
        )

    def begin(self, request: InboundRequest) -> InboundCall:
        parent = extract_trace(request.headers)
        request_id = request.headers.get("x-request-id") or str(uuid.uuid4())
        context = RequestContext(
            request_id=request_id,
            deadline=deadline_from_headers(request.headers),
            peer_identity=request.peer_identity,
        )
        span = self._tracer.start_span(
            request.method if request.protocol == "http" else request.path.lstrip("/"),
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": request.method,
                "url.path": request.path,
                "url.scheme": request.scheme,
                "server.address": request.host,
                "server.port": request.port,
                "meshlib.request_id": request_id,
                **(
                    {"meshlib.peer.identity": request.peer_identity}
                    if request.peer_identity
                    else {}
                ),
            },
        )
        decision = AuthzDecision(True)
        if self.authorizer is not None:
            decision = self.authorizer.check(request)
            if not decision.allowed:
                span.set_attribute("meshlib.rbac.denied_by", decision.policy)
                self._denied.add(
                    1,
                    {"policy": decision.policy or "default", "destination_workload": self.workload},
                )
        return InboundCall(self, request, context, span, parent, decision)

    def record(
        self, call: InboundCall, status: int, elapsed_ms: float, grpc_status: int | None
    ) -> None:
        src_ns, src_sa = spiffe_parts(call.request.peer_identity)
        labels: dict[str, str | int] = {
            "reporter": "destination",
            "source_workload": src_sa if call.request.peer_identity else "unknown",
            "source_workload_namespace": src_ns,
            "source_principal": call.request.peer_identity or "unknown",
            "destination_workload": self.workload,
            "destination_workload_namespace": self.namespace,
            "destination_service": self.service,
            "request_protocol": call.request.protocol,
            "response_code": str(status),
            "response_flags": _flag(call.decision),
            "connection_security_policy": "mutual_tls" if call.request.peer_identity else "none",
        }
        if grpc_status is not None:
            labels["grpc_response_status"] = str(grpc_status)
        self._requests.add(1, labels)
        self._duration.record(elapsed_ms, labels)
        self._registry.record({k: str(v) for k, v in labels.items()}, elapsed_ms)


def _flag(decision: AuthzDecision) -> str:
    if decision.allowed:
        return "-"
    return decision.reply.flag if decision.reply is not None else "RBAC"
