"""Spans of the telemetry seam, read back with the OpenTelemetry SDK's in-memory exporter."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from opentelemetry import trace
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import SpanKind, StatusCode

from meshlib import Call, CircuitBreakerOpen, NoHealthyUpstream
from meshlib._outcome import Outcome, OutcomeKind
from meshlib.telemetry import Telemetry, retry_reason
from tests.telemetry.conftest import Otel

CLUSTER = "outbound|9080||reviews.default.svc.cluster.local"
CALL = Call("reviews.default.svc.cluster.local:9080", "GET", "/reviews/1?x=2")


def two_attempts(t: Telemetry, headers: dict[str, str]) -> None:
    """A call whose first attempt answers 503 and whose retry, elsewhere, answers 200."""
    rec = t.start_call(CALL, protocol="http")
    rec.route("reviews-route", CLUSTER)
    first = rec.attempt("127.0.0.1:8001", CLUSTER, locality="us-east/a", attempt_number=1)
    failed = Outcome(OutcomeKind.RESPONSE, status=503, latency=0.01)
    first.end(failed)
    second = rec.attempt(
        "127.0.0.1:8002", CLUSTER, attempt_number=2, retry_reason=retry_reason(failed)
    )
    second.inject(headers)
    second.end(Outcome(OutcomeKind.RESPONSE, status=200, latency=0.01))
    rec.end(status=200)


def test_call_span_with_two_attempt_children(otel: Otel) -> None:
    headers: dict[str, str] = {}
    two_attempts(otel.telemetry, headers)
    spans = otel.finished()
    assert [s.name for s in spans] == ["GET attempt", "GET attempt", "GET"]
    first, second, call = spans
    assert call.kind is SpanKind.CLIENT and call.parent is None
    assert call.attributes is not None
    assert dict(call.attributes) == {
        "http.request.method": "GET",
        "server.address": "reviews.default.svc.cluster.local",
        "server.port": 9080,
        "url.full": "http://reviews.default.svc.cluster.local:9080/reviews/1?x=2",
        "http.response.status_code": 200,
        "meshlib.route": "reviews-route",
        "meshlib.cluster": CLUSTER,
        "meshlib.upstream.address": "127.0.0.1:8002",
        "meshlib.retry.count": 1,
        "meshlib.outcome": "success",
        "meshlib.response_flags": "-",
    }
    assert call.status.status_code is StatusCode.UNSET
    for attempt in (first, second):
        assert attempt.kind is SpanKind.CLIENT
        assert attempt.parent is not None
        assert attempt.parent.span_id == call.context.span_id
        assert attempt.context.trace_id == call.context.trace_id
    assert first.attributes is not None and second.attributes is not None
    assert first.attributes["meshlib.locality"] == "us-east/a"
    assert first.attributes["network.peer.address"] == "127.0.0.1"
    assert first.attributes["network.peer.port"] == 8001
    assert first.attributes["http.response.status_code"] == 503
    assert first.attributes["error.type"] == "503"
    assert first.status.status_code is StatusCode.ERROR
    assert "http.request.resend_count" not in first.attributes
    assert second.attributes["http.request.resend_count"] == 1
    assert second.attributes["meshlib.retry.reason"] == "5xx"
    assert second.attributes["meshlib.attempt"] == 2
    assert second.attributes["meshlib.outcome"] == "response"
    assert second.status.status_code is StatusCode.UNSET
    # The retry carries its own span's context upstream (W3C traceparent).
    trace_id, span_id = headers["traceparent"].split("-")[1:3]
    assert int(trace_id, 16) == call.context.trace_id
    assert int(span_id, 16) == second.context.span_id


def test_call_span_is_child_of_the_application_span(otel: Otel) -> None:
    tracer = otel.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("handler") as app_span:
        rec = otel.telemetry.start_call(CALL)
        rec.attempt("127.0.0.1:8001", CLUSTER).end(Outcome(OutcomeKind.RESPONSE, status=200))
        rec.end(status=200)
    call = next(s for s in otel.finished() if s.name == "GET")
    assert call.parent is not None
    assert call.parent.span_id == app_span.get_span_context().span_id


def test_grpc_call_span_follows_rpc_conventions(otel: Otel) -> None:
    call = Call("greeter.default.svc.cluster.local:50051", "POST", "/helloworld.Greeter/SayHello")
    rec = otel.telemetry.start_call(call, protocol="grpc")
    rec.route("", "outbound|50051||greeter.default.svc.cluster.local")
    attempt = rec.attempt("127.0.0.1:9001")
    attempt.end(Outcome(OutcomeKind.RESPONSE, status=200, grpc_status=14))
    rec.end(grpc_status=14)
    attempt_span, span = otel.finished()
    assert span.name == "helloworld.Greeter/SayHello"
    assert span.attributes is not None
    assert span.attributes["rpc.system"] == "grpc"
    assert span.attributes["rpc.service"] == "helloworld.Greeter"
    assert span.attributes["rpc.method"] == "SayHello"
    assert span.attributes["rpc.grpc.status_code"] == 14
    assert span.attributes["error.type"] == "UNAVAILABLE"
    assert span.attributes["meshlib.outcome"] == "failure"
    assert "http.request.method" not in span.attributes
    assert span.status.status_code is StatusCode.ERROR
    assert attempt_span.attributes is not None
    assert (
        attempt_span.attributes["meshlib.cluster"]
        == "outbound|50051||greeter.default.svc.cluster.local"
    )
    assert attempt_span.attributes["rpc.grpc.status_code"] == 14


def test_overflow_and_connect_failure_are_errors(otel: Otel) -> None:
    rec = otel.telemetry.start_call(CALL)
    rec.route("r", CLUSTER)
    rec.end(error=CircuitBreakerOpen("full", cluster=CLUSTER, limit="max_requests"))
    rec2 = otel.telemetry.start_call(CALL)
    rec2.route("r", CLUSTER)
    rec2.attempt("127.0.0.1:1").end(Outcome(OutcomeKind.CONNECT_FAILURE))
    rec2.end(error=NoHealthyUpstream("none", cluster=CLUSTER, reason="no_healthy_upstream"))
    overflow, attempt, no_upstream = otel.finished()
    assert overflow.attributes is not None
    assert overflow.attributes["meshlib.outcome"] == "overflow"
    assert overflow.attributes["error.type"] == "meshlib._errors.CircuitBreakerOpen"
    assert overflow.status.status_code is StatusCode.ERROR
    assert [e.name for e in overflow.events] == ["exception"]
    assert attempt.attributes is not None
    assert attempt.attributes["error.type"] == "connect_failure"
    assert attempt.status.status_code is StatusCode.ERROR
    assert no_upstream.attributes is not None
    assert no_upstream.attributes["meshlib.outcome"] == "no_healthy_upstream"


def test_end_is_idempotent(otel: Otel) -> None:
    rec = otel.telemetry.start_call(CALL)
    rec.end(status=200)
    rec.end(status=500)
    assert len(otel.finished()) == 1
    assert otel.telemetry.registry.requests.values  # counted once
    assert sum(otel.telemetry.registry.requests.values.values()) == 1


def test_no_op_providers_start_no_span_but_keep_stats() -> None:
    t = Telemetry(trace.NoOpTracerProvider(), NoOpMeterProvider())
    rec = t.start_call(CALL)
    attempt = rec.attempt("127.0.0.1:8001", CLUSTER)
    headers: dict[str, str] = {}
    attempt.inject(headers)
    attempt.end(Outcome(OutcomeKind.RESPONSE, status=200))
    rec.end(status=200)
    assert rec.span is None and attempt.span is None and headers == {}
    assert t.tracer() is None and t.otel() is None
    assert sum(t.registry.requests.values.values()) == 1
    assert t.registry.upstream_rq.get((CLUSTER, "127.0.0.1:8001", "response", "200")) == 1


def test_bad_input_is_refused() -> None:
    t = Telemetry(trace.NoOpTracerProvider(), NoOpMeterProvider())
    with pytest.raises(ValueError, match="protocol"):
        t.start_call(CALL, protocol="tcp")
    with pytest.raises(ValueError, match="xds_connection state"):
        t.xds_connection("up")


def test_global_providers_set_later_are_followed() -> None:
    """Telemetry() made before the application configures the SDK still traces after."""
    script = textwrap.dedent(
        """
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from meshlib import Call
        from meshlib.telemetry import Telemetry, _telemetry

        _telemetry.RECHECK = 0.0  # look for the global provider on every call
        t = Telemetry()
        call = Call("a:80", "GET", "/")
        before = t.start_call(call)
        before.end(status=200)
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        t.start_call(call).end(status=200)
        print(before.span is None, [s.name for s in exporter.get_finished_spans()])
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "True ['GET']"
