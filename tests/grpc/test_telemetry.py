"""Telemetry through the gRPC channels: a call span with one child span per attempt (RPC
semantic conventions), the attempt's trace context sent upstream, Istio and per-attempt
metrics, read back with the OpenTelemetry SDK's in-memory exporter and reader."""

from __future__ import annotations

import grpc
import pytest
from opentelemetry.trace import SpanKind, StatusCode

from meshlib import Mesh
from meshlib.grpc import MeshAioChannel, MeshChannel
from tests.telemetry.conftest import Otel
from tests.telemetry.conftest import otel as otel  # the fixture

from .conftest import CLUSTER, TARGET, MeshFactory
from .support import Backend, grpc_fault, retry_policy, route, service

ECHO = "/test.Echo/Echo"


@pytest.fixture
def mesh(backends: list[Backend], mesh_factory: MeshFactory) -> Mesh:
    routes = [
        route(CLUSTER, path="/test.Echo/Other", fault=grpc_fault(abort=8)),
        route(CLUSTER, timeout=5.0, retry=retry_policy("unavailable", 2)),
    ]
    return mesh_factory(service(TARGET, routes, {CLUSTER: [b.address for b in backends]}))[0]


def test_call_and_attempt_spans_and_metrics(
    mesh: Mesh, backends: list[Backend], otel: Otel
) -> None:
    with MeshChannel(mesh._engine, f"xds:///{TARGET}", telemetry=otel.telemetry) as channel:
        echo = channel.unary_unary(ECHO)
        with pytest.raises(grpc.RpcError):
            echo(b"x", timeout=5, metadata=[("x-code", "14")])
        assert echo(b"x", timeout=5).startswith(b"b")
    spans = otel.finished()
    calls = [s for s in spans if s.name == "test.Echo/Echo"]
    attempts = [s for s in spans if s.name == "test.Echo/Echo attempt"]
    assert len(calls) == 2 and len(attempts) == 4
    failed, ok = calls
    assert failed.kind is SpanKind.CLIENT and failed.attributes is not None
    assert failed.attributes["rpc.system"] == "grpc"
    assert failed.attributes["rpc.service"] == "test.Echo"
    assert failed.attributes["rpc.method"] == "Echo"
    assert failed.attributes["rpc.grpc.status_code"] == 14
    assert failed.attributes["meshlib.retry.count"] == 2
    assert failed.attributes["meshlib.cluster"] == CLUSTER
    assert failed.status.status_code is StatusCode.ERROR
    assert ok.attributes is not None and ok.attributes["rpc.grpc.status_code"] == 0
    children = [a for a in attempts if a.parent and a.parent.span_id == failed.context.span_id]
    assert [a.attributes["meshlib.attempt"] for a in children if a.attributes] == [1, 2, 3]
    assert [a.attributes.get("meshlib.retry.reason") for a in children if a.attributes] == [
        None,
        "unavailable",
        "unavailable",
    ]
    # each attempt's own context went upstream
    sent = [m["traceparent"] for b in backends for m in b.logic.metadata]
    assert {f"{a.context.span_id:016x}" for a in attempts} == {t.split("-")[2] for t in sent}
    requests = {
        p.attributes["grpc_response_status"]: p.value for p in otel.points("istio_requests_total")
    }
    assert requests == {"14": 1, "0": 1}
    per_attempt = sum(p.value for p in otel.points("meshlib_upstream_rq_total"))
    assert per_attempt == 4
    retries = otel.points("meshlib_upstream_rq_retry_total")
    assert [(p.attributes["reason"], p.value) for p in retries] == [("unavailable", 2)]


async def test_aio_fault_abort_and_call_metrics(mesh: Mesh, otel: Otel) -> None:
    channel = MeshAioChannel(mesh._engine, f"xds:///{TARGET}", telemetry=otel.telemetry)
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await channel.unary_unary("/test.Echo/Other")(b"x", timeout=5)
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (await channel.unary_unary(ECHO)(b"x", timeout=5)).startswith(b"b")
    spans = otel.finished()
    assert sorted(s.name for s in spans) == [
        "test.Echo/Echo",
        "test.Echo/Echo attempt",
        "test.Echo/Other",  # aborted by the fault filter: no attempt
    ]
    requests = {
        p.attributes["grpc_response_status"]: p.value for p in otel.points("istio_requests_total")
    }
    assert requests == {"8": 1, "0": 1}


def test_a_retried_stream_records_one_attempt_per_try(
    backends: list[Backend], mesh_factory: MeshFactory, otel: Otel
) -> None:
    routes = [route(CLUSTER, timeout=5.0, retry=retry_policy("unavailable", 2))]
    mesh = mesh_factory(service(TARGET, routes, {CLUSTER: [backends[0].address]}))[0]
    backends[0].logic.fail_streams = 2
    with MeshChannel(mesh._engine, f"xds:///{TARGET}", telemetry=otel.telemetry) as channel:
        assert len(list(channel.unary_stream("/test.Echo/Stream")(b"2", timeout=5))) == 2
    spans = otel.finished()
    calls = [s for s in spans if s.name == "test.Echo/Stream"]
    attempts = [s for s in spans if s.name == "test.Echo/Stream attempt"]
    assert len(calls) == 1 and len(attempts) == 3  # two failed tries, then the stream
    assert calls[0].attributes is not None
    assert calls[0].attributes["rpc.grpc.status_code"] == 0
    assert calls[0].attributes["meshlib.retry.count"] == 2
