"""Inbound middleware on real servers: trace joining, context propagation, authz, metrics."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from flask import Flask, jsonify
from flask import request as flask_request
from meshlib.integrations._inbound import AuthzDecision, Inbound, InboundRequest
from meshlib.integrations.asgi import MeshMiddleware
from meshlib.integrations.flask import MeshFlask
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from werkzeug.serving import make_server

from meshlib.context import current_request, deadline_from_headers, inject_outbound
from tests.support import UvicornThread

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"


class Telemetry:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.metrics = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.metrics])

    def inbound(self, **kwargs: Any) -> Inbound:
        return Inbound(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider, **kwargs
        )

    def finished_spans(self, count: int) -> tuple[Any, ...]:
        """The server ends its span just after the response is sent: wait (bounded)."""
        deadline = time.monotonic() + 5
        while len(spans := self.spans.get_finished_spans()) < count:
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        return tuple(spans)

    def points(self, name: str) -> list[Any]:
        data = self.metrics.get_metrics_data()
        assert data is not None
        return [
            p
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
            if m.name == name
            for p in m.data.data_points
        ]


@pytest.fixture
def telemetry() -> Telemetry:
    return Telemetry()


@pytest.fixture
def echo() -> Iterator[UvicornThread]:
    """A downstream service that returns the headers it received."""
    app = FastAPI()

    @app.get("/headers")
    def headers(request: Request) -> dict[str, str]:
        return dict(request.headers)

    with UvicornThread(app) as server:
        yield server


class DenyPath:
    def check(self, request: InboundRequest) -> AuthzDecision:
        if request.path.startswith("/admin"):
            return AuthzDecision(False, policy="ns/deny-admin")
        return AuthzDecision(True)


def asgi_app(echo_port: int, inbound: Inbound) -> FastAPI:
    app = FastAPI()

    @app.get("/{path:path}")
    def handler(path: str) -> dict[str, Any]:  # sync: runs in a thread with a copied context
        span = trace.get_current_span().get_span_context()
        ctx = current_request()
        headers: dict[str, str] = {}
        remaining = inject_outbound(headers)
        downstream = httpx.get(f"http://127.0.0.1:{echo_port}/headers", headers=headers).json()
        return {
            "trace_id": format(span.trace_id, "032x"),
            "span_id": format(span.span_id, "016x"),
            "request_id": ctx.request_id if ctx else None,
            "remaining": remaining,
            "downstream": downstream,
        }

    app.add_middleware(MeshMiddleware, inbound=inbound)
    return app


def test_asgi_joins_w3c_trace_and_hands_it_on(telemetry: Telemetry, echo: UvicornThread) -> None:
    inbound = telemetry.inbound(
        workload="productpage-v1",
        namespace="default",
        service="productpage.default.svc.cluster.local",
    )
    with UvicornThread(asgi_app(echo.port, inbound)) as server:
        r = httpx.get(
            f"http://127.0.0.1:{server.port}/page",
            headers={
                "traceparent": f"00-{TRACE_ID}-{PARENT_SPAN}-01",
                "x-request-id": "req-123",
                "x-envoy-expected-rq-timeout-ms": "2000",
            },
        )
    body = r.json()
    assert r.status_code == 200 and r.headers["x-request-id"] == "req-123"
    assert body["trace_id"] == TRACE_ID and body["request_id"] == "req-123"
    assert 0 < body["remaining"] <= 2.0  # the caller's deadline, shrinking
    (span,) = telemetry.finished_spans(1)
    assert span.kind is trace.SpanKind.SERVER
    assert format(span.parent.span_id, "016x") == PARENT_SPAN
    assert format(span.context.span_id, "016x") == body["span_id"]
    down = body["downstream"]
    # The outbound call carries the trace (W3C and B3), the request id.
    assert down["traceparent"].split("-")[1:3] == [TRACE_ID, body["span_id"]]
    assert down["x-b3-traceid"] == TRACE_ID and down["x-b3-spanid"] == body["span_id"]
    assert down["x-request-id"] == "req-123"
    (point,) = telemetry.points("istio_requests_total")
    assert point.value == 1
    assert point.attributes["response_code"] == "200"
    assert point.attributes["destination_workload"] == "productpage-v1"
    assert point.attributes["reporter"] == "destination"
    assert telemetry.points("istio_request_duration_milliseconds")[0].count == 1


def test_asgi_denies_before_the_handler(telemetry: Telemetry, echo: UvicornThread) -> None:
    inbound = telemetry.inbound(workload="w", authorizer=DenyPath())
    with UvicornThread(asgi_app(echo.port, inbound)) as server:
        denied = httpx.get(f"http://127.0.0.1:{server.port}/admin/x")
        allowed = httpx.get(f"http://127.0.0.1:{server.port}/public")
    assert denied.status_code == 403 and denied.text == "RBAC: access denied"
    assert allowed.status_code == 200
    telemetry.finished_spans(2)
    (deny_point,) = telemetry.points("meshlib_inbound_denied_total")
    assert deny_point.attributes["policy"] == "ns/deny-admin"
    codes = sorted(p.attributes["response_code"] for p in telemetry.points("istio_requests_total"))
    assert codes == ["200", "403"]


def serve_wsgi(app: Flask) -> tuple[Any, int]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_port


def test_flask_joins_b3_trace(telemetry: Telemetry, echo: UvicornThread) -> None:
    app = Flask("ratings")
    MeshFlask(app, inbound=telemetry.inbound(workload="ratings-v1"))

    @app.get("/ratings/<int:item>")
    def ratings(item: int) -> Any:
        span = trace.get_current_span().get_span_context()
        headers: dict[str, str] = {}
        inject_outbound(headers)
        down = httpx.get(f"http://127.0.0.1:{echo.port}/headers", headers=headers).json()
        ctx = current_request()
        return jsonify(
            trace_id=format(span.trace_id, "032x"),
            item=item,
            downstream=down,
            request_id=ctx.request_id if ctx else None,
            path=flask_request.path,
        )

    server, port = serve_wsgi(app)
    try:
        r = httpx.get(
            f"http://127.0.0.1:{port}/ratings/7",
            headers={"x-b3-traceid": TRACE_ID, "x-b3-spanid": PARENT_SPAN, "x-b3-sampled": "1"},
        )
        denied_app_status = r.status_code
    finally:
        server.shutdown()
    body = r.json()
    assert denied_app_status == 200 and body["item"] == 7
    assert body["trace_id"] == TRACE_ID
    assert body["downstream"]["x-b3-traceid"] == TRACE_ID
    assert body["request_id"] and r.headers["x-request-id"] == body["request_id"]  # generated
    (span,) = telemetry.finished_spans(1)
    assert format(span.parent.span_id, "016x") == PARENT_SPAN
    (point,) = telemetry.points("istio_requests_total")
    assert point.attributes["destination_workload"] == "ratings-v1"


def test_flask_denies_with_403(telemetry: Telemetry) -> None:
    app = Flask("admin")
    MeshFlask(app, inbound=telemetry.inbound(authorizer=DenyPath()))
    hits = []

    @app.get("/admin/panel")
    def panel() -> str:
        hits.append(1)
        return "secret"

    server, port = serve_wsgi(app)
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/admin/panel")
    finally:
        server.shutdown()
    assert r.status_code == 403 and hits == []


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"grpc-timeout": "250m"}, 0.25),
        ({"grpc-timeout": "2S"}, 2.0),
        ({"grpc-timeout": "1H"}, 3600.0),
        ({"grpc-timeout": "100u"}, 0.0001),
        ({"x-envoy-expected-rq-timeout-ms": "1500"}, 1.5),
        ({"grpc-timeout": "bad", "x-envoy-expected-rq-timeout-ms": "700"}, 0.7),
        ({"grpc-timeout": "123456789S"}, None),  # more than 8 digits is invalid
        ({}, None),
    ],
)
def test_deadline_headers(headers: dict[str, str], seconds: float | None) -> None:
    deadline = deadline_from_headers(headers, now=100.0)
    assert (deadline - 100.0 if deadline is not None else None) == pytest.approx(seconds)
