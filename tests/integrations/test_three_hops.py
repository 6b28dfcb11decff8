"""client -> FastAPI -> Flask -> gRPC, every hop through the mesh: one trace, correct
parent/child links, the request id carried, and the caller's deadline shrinking hop by hop."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from fastapi import FastAPI
from flask import Flask, jsonify
from meshlib.integrations._inbound import Inbound
from meshlib.integrations.asgi import MeshMiddleware
from meshlib.integrations.flask import MeshFlask
from meshlib.integrations.grpc_server import MeshServerInterceptor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from werkzeug.serving import make_server

from meshlib import Mesh
from meshlib.context import current_request
from meshlib.controlplane import ControlPlane
from meshlib.telemetry import Telemetry
from tests.support import UvicornThread, service_objects, write_config

FRONTEND, RATINGS, DETAILS = 8000, 8001, 8002


def _bytes(x: bytes) -> bytes:
    return x


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[dict[str, Any]]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    seen: dict[str, Any] = {}

    # hop 3: gRPC
    def details(request: bytes, context: grpc.ServicerContext) -> bytes:
        ctx = current_request()
        seen["grpc_remaining"] = context.time_remaining()
        seen["grpc_request_id"] = ctx.request_id if ctx else None
        return b"details"

    grpc_server = grpc.server(
        futures.ThreadPoolExecutor(4),
        interceptors=[MeshServerInterceptor(Inbound(workload="details", tracer_provider=provider))],
    )
    grpc_server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "test.Details",
                {"Get": grpc.unary_unary_rpc_method_handler(details, _bytes, _bytes)},
            )
        ]
    )
    grpc_port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()

    # hop 2: Flask, calls gRPC through the mesh
    flask_app = Flask("ratings")
    MeshFlask(flask_app, inbound=Inbound(workload="ratings", tracer_provider=provider))
    holder: dict[str, Mesh] = {}

    @flask_app.get("/ratings")
    def ratings() -> Any:
        ctx = current_request()
        seen["flask_remaining"] = ctx.remaining() if ctx else None
        with holder["mesh"].grpc_channel(
            f"xds:///details.default.svc.cluster.local:{DETAILS}"
        ) as ch:
            answer = ch.unary_unary("/test.Details/Get", _bytes, _bytes)(b"x", timeout=30)
        return jsonify(details=answer.decode())

    flask_server = make_server("127.0.0.1", 0, flask_app, threaded=True)
    threading.Thread(target=flask_server.serve_forever, daemon=True).start()

    # hop 1: FastAPI, calls Flask through the mesh
    fastapi_app = FastAPI()

    @fastapi_app.get("/page")
    def page() -> dict[str, Any]:
        ctx = current_request()
        seen["fastapi_remaining"] = ctx.remaining() if ctx else None
        with holder["mesh"].httpx_client(timeout=30) as client:
            r = client.get(f"http://ratings.default.svc.cluster.local:{RATINGS}/ratings")
        return {"ratings": r.json()}

    fastapi_app.add_middleware(
        MeshMiddleware, inbound=Inbound(workload="frontend", tracer_provider=provider)
    )
    with UvicornThread(fastapi_app) as frontend:
        objects = (
            service_objects("frontend", FRONTEND, [("127.0.0.1", frontend.port)])
            + service_objects("ratings", RATINGS, [("127.0.0.1", flask_server.server_port)])
            + service_objects("details", DETAILS, [("127.0.0.1", grpc_port)])
        )
        write_config(tmp_path / "cfg", objects)
        with (
            ControlPlane(tmp_path / "cfg") as cp,
            Mesh(bootstrap=cp.bootstrap(), telemetry=Telemetry(tracer_provider=provider)) as mesh,
        ):
            holder["mesh"] = mesh
            yield {"mesh": mesh, "spans": spans, "seen": seen}
    flask_server.shutdown()
    grpc_server.stop(0)


def test_one_trace_across_three_hops_with_a_shrinking_deadline(chain: dict[str, Any]) -> None:
    mesh: Mesh = chain["mesh"]
    with mesh.httpx_client(timeout=30) as client:
        r = client.get(
            f"http://frontend.default.svc.cluster.local:{FRONTEND}/page",
            headers={"x-request-id": "chain-1", "x-envoy-expected-rq-timeout-ms": "9000"},
        )
    assert r.status_code == 200 and r.json() == {"ratings": {"details": "details"}}
    seen = chain["seen"]
    # The deadline the first caller set shrinks at every hop.
    # (gRPC sends its deadline as a rounded-up grpc-timeout, so the last hop may read a few
    # ms more than Flask had; it is bounded by the first caller's 9 s, not the 30 s timeouts.)
    assert 0 < seen["flask_remaining"] < seen["fastapi_remaining"] <= 9.0
    assert 0 < seen["grpc_remaining"] < seen["flask_remaining"] + 0.05
    assert seen["grpc_request_id"] == "chain-1"

    # Each server ends its span just after sending the response: wait for all three (bounded).
    deadline = time.monotonic() + 5
    while (
        sum(s.kind is SpanKind.SERVER for s in chain["spans"].get_finished_spans()) < 3
        and time.monotonic() < deadline
    ):
        time.sleep(0.01)
    spans = chain["spans"].get_finished_spans()
    servers = {
        s.attributes.get("meshlib.request_id"): s for s in spans if s.kind is SpanKind.SERVER
    }
    assert len({s.context.trace_id for s in spans}) == 1, "one trace id end to end"
    by_id = {s.context.span_id: s for s in spans}

    def ancestors(span: Any) -> list[Any]:
        out = []
        while span.parent is not None and span.parent.span_id in by_id:
            span = by_id[span.parent.span_id]
            out.append(span)
        return out

    server_spans = sorted(
        (s for s in spans if s.kind is SpanKind.SERVER), key=lambda s: len(ancestors(s))
    )
    assert len(server_spans) == 3 and servers  # frontend, ratings, details
    # Each server span descends from the previous hop's server span through a client span.
    for outer, inner in itertools.pairwise(server_spans):
        chain_up = ancestors(inner)
        assert outer in chain_up
        assert chain_up[0].kind is SpanKind.CLIENT
