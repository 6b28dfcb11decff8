"""Adoption and observability: the instrumentor routes unmodified httpx code through the
mesh (in process, and under ``opentelemetry-instrument`` in a subprocess); spans and
metrics per call and per attempt; the inbound request's context goes upstream."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from meshlib.integrations.instrumentor import MeshInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from meshlib import Mesh
from meshlib.context import RequestContext, request_scope
from meshlib.telemetry import Telemetry
from tests.httpx.mesh_xds import Served, Upstream, mesh_resources, serving
from tests.httpx.servers import EchoApp
from tests.support import UvicornThread

HOST = "adopt.test"
BIN = Path(sys.executable).parent
APP = """
import httpx, json, sys
r = httpx.get(sys.argv[1], timeout=10)
with httpx.Client() as c:
    r2 = c.get(sys.argv[1])
print(json.dumps({"status": r.status_code, "backend": r.json()["backend"],
                  "again": r2.json()["backend"]}))
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, EchoApp]]:
    app = EchoApp("adopted")
    with UvicornThread(app) as server:
        retry = {"retry_policy": {"retry_on": "5xx", "num_retries": 2}}
        res = mesh_resources(HOST, {"svc": Upstream([server.port])}, [("/", "svc", retry)])
        with serving(tmp_path_factory.mktemp("cp"), res) as served:
            yield served, app


def test_instrumentor_routes_plain_httpx_clients(world: tuple[Served, EchoApp]) -> None:
    served, _ = world
    instrumentor = MeshInstrumentor()
    instrumentor.instrument(bootstrap=served.bootstrap())
    try:
        with httpx.Client(timeout=5) as client:  # no mesh in sight
            assert client.get(f"http://{HOST}/echo").json()["backend"] == "adopted"
    finally:
        instrumentor.uninstrument()
    with httpx.Client(timeout=5) as client, pytest.raises(httpx.ConnectError):
        client.get(f"http://{HOST}/echo")  # httpx restored: the name does not resolve


async def test_instrumentor_routes_async_clients(world: tuple[Served, EchoApp]) -> None:
    served, _ = world
    with Mesh(bootstrap=served.bootstrap()) as mesh:
        instrumentor = MeshInstrumentor()
        instrumentor.instrument(mesh=mesh)
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                r = await client.get(f"http://{HOST}/echo")
        finally:
            instrumentor.uninstrument()
    assert r.json()["backend"] == "adopted"


def test_opentelemetry_instrument_runs_an_unmodified_module(
    world: tuple[Served, EchoApp], tmp_path: Path
) -> None:
    served, _ = world
    script = tmp_path / "plain_app.py"
    script.write_text(APP)
    env = {**os.environ, "GRPC_XDS_BOOTSTRAP_CONFIG": json.dumps(served.bootstrap())}
    env.pop("GRPC_XDS_BOOTSTRAP", None)
    env["OTEL_TRACES_EXPORTER"] = env["OTEL_METRICS_EXPORTER"] = env["OTEL_LOGS_EXPORTER"] = "none"
    done = subprocess.run(
        [str(BIN / "opentelemetry-instrument"), sys.executable, str(script), f"http://{HOST}/e"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {"status": 200, "backend": "adopted", "again": "adopted"}


@pytest.fixture
def traced(world: tuple[Served, EchoApp]) -> Iterator[tuple[Mesh, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    served, _ = world
    with Mesh(bootstrap=served.bootstrap(), telemetry=Telemetry(provider)) as mesh:
        yield mesh, exporter


def test_spans_and_metrics_per_call_and_attempt(
    traced: tuple[Mesh, InMemorySpanExporter],
) -> None:
    mesh, exporter = traced
    with mesh.httpx_client(timeout=5) as client:
        r = client.get(f"http://{HOST}/flaky/spans/1")
    assert r.status_code == 200
    spans = {s.name: s for s in exporter.get_finished_spans() if s.name == "GET"}
    attempts = [s for s in exporter.get_finished_spans() if s.name == "GET attempt"]
    call = spans["GET"]
    assert call.attributes is not None
    assert call.attributes["meshlib.cluster"] == "svc"
    assert call.attributes["meshlib.retry.count"] == 1
    assert call.attributes["http.response.status_code"] == 200
    assert len(attempts) == 2
    assert all(a.parent is not None and a.parent.span_id == call.context.span_id for a in attempts)
    retried = next(a for a in attempts if a.attributes and a.attributes["meshlib.attempt"] == 2)
    assert retried.attributes is not None and retried.attributes["meshlib.retry.reason"] == "5xx"
    # the upstream saw the second attempt's trace context
    echoed = r.json()["headers"]["traceparent"]
    assert f"{retried.context.span_id:016x}" in echoed
    prometheus = mesh.telemetry.stats.prometheus()
    assert 'meshlib_upstream_rq_retry_total{cluster="svc",reason="5xx"} 1' in prometheus


def test_inbound_context_goes_upstream_and_caps_the_timeout(
    world: tuple[Served, EchoApp],
) -> None:
    served, _ = world
    with Mesh(bootstrap=served.bootstrap()) as mesh, mesh.httpx_client(timeout=5) as client:
        ctx = RequestContext(request_id="req-42", deadline=time.monotonic() + 5)
        from opentelemetry import context as otel_context

        with request_scope(ctx, otel_context.Context()):
            body = client.get(f"http://{HOST}/echo").json()
        assert body["headers"]["x-request-id"] == "req-42"
        assert 0 < int(body["headers"]["x-envoy-expected-rq-timeout-ms"]) <= 5000
        late = RequestContext(request_id="req-43", deadline=time.monotonic() + 0.2)
        with request_scope(late, otel_context.Context()):
            r = client.get(f"http://{HOST}/slow/2000")  # the route allows 15 s; the caller 0.2 s
        assert (r.status_code, r.text) == (504, "upstream request timeout")


def test_call_metrics_reach_the_stats_registry(world: tuple[Served, EchoApp]) -> None:
    served, _ = world
    with Mesh(bootstrap=served.bootstrap()) as mesh, mesh.httpx_client(timeout=5) as client:
        for i in range(3):
            client.get(f"http://{HOST}/echo/{i}")
        prometheus = mesh.telemetry.stats.prometheus()
    calls = [
        line
        for line in prometheus.splitlines()
        if line.startswith("istio_requests_total{") and 'response_code="200"' in line
    ]
    assert len(calls) == 1 and calls[0].endswith(" 3"), calls
    assert 'meshlib_upstream_rq_total{cluster="svc"' in prometheus
