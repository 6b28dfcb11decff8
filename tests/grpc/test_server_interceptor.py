"""The gRPC server interceptors (grpc.server and grpc.aio.server): trace join, request
context, authorization (allow and deny) and the gRPC status they record."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from meshlib.integrations._inbound import AuthzDecision, Inbound, InboundRequest
from meshlib.integrations.grpc_server import MeshAioServerInterceptor, MeshServerInterceptor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from .support import AioBackend, Backend

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


class DenyChat:
    """Allows everything but /test.Echo/Chat (and remembers what it saw)."""

    def __init__(self) -> None:
        self.seen: list[InboundRequest] = []

    def check(self, request: InboundRequest) -> AuthzDecision:
        self.seen.append(request)
        if request.path == "/test.Echo/Chat":
            return AuthzDecision(False, policy="ns[default]-policy[deny-chat]-rule[0]")
        return AuthzDecision(True, policy="allow")


@pytest.fixture(params=["sync", "aio"])
def served(request: Any) -> Iterator[tuple[Backend | AioBackend, InMemorySpanExporter, DenyChat]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    authz = DenyChat()
    inbound = Inbound(
        workload="echo", namespace="default", authorizer=authz, tracer_provider=provider
    )
    if request.param == "sync":
        backend: Backend | AioBackend = Backend("s", [MeshServerInterceptor(inbound)])
    else:
        backend = AioBackend("s", [MeshAioServerInterceptor(inbound)])
    yield backend, exporter, authz
    backend.stop()


def test_joins_the_callers_trace_and_authorizes(
    served: tuple[Backend | AioBackend, InMemorySpanExporter, DenyChat],
) -> None:
    backend, exporter, authz = served
    with grpc.insecure_channel(backend.address) as channel:
        meta = [("traceparent", PARENT), ("x-request-id", "req-1")]
        assert channel.unary_unary("/test.Echo/Echo")(b"x", metadata=meta, timeout=5)
        items = list(channel.unary_stream("/test.Echo/Stream")(b"2", timeout=5))
        assert len(items) == 2
        with pytest.raises(grpc.RpcError) as info:
            list(channel.stream_stream("/test.Echo/Chat")(iter([b"a"]), timeout=5))
        assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert info.value.details() == "RBAC: access denied"
        with pytest.raises(grpc.RpcError) as failed:
            channel.unary_unary("/test.Echo/Echo")(b"x", metadata=[("x-code", "13")], timeout=5)
        assert failed.value.code() is grpc.StatusCode.INTERNAL
    assert backend.logic.calls == 3  # the denied call never reached its handler
    assert [r.path for r in authz.seen] == [
        "/test.Echo/Echo",
        "/test.Echo/Stream",
        "/test.Echo/Chat",
        "/test.Echo/Echo",
    ]
    assert authz.seen[0].protocol == "grpc"
    assert authz.seen[0].headers["x-request-id"] == "req-1"
    for _ in range(500):  # bounded: the server may end its span just after the reply
        if len(exporter.get_finished_spans()) >= 4:
            break
        time.sleep(0.01)
    spans = {s.attributes["meshlib.request_id"]: s for s in exporter.get_finished_spans()}
    assert len(exporter.get_finished_spans()) == 4
    joined = spans["req-1"]
    assert joined.context.trace_id == int(TRACE_ID, 16)  # the caller's trace, joined
    assert joined.parent is not None and joined.parent.span_id == int("00f067aa0ba902b7", 16)
    assert joined.name == "test.Echo/Echo"
    statuses = [s.attributes["http.response.status_code"] for s in exporter.get_finished_spans()]
    assert sorted(statuses) == [200, 200, 403, 500]
