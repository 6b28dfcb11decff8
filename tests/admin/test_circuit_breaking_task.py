"""Istio's circuit-breaking task, its DestinationRule unchanged, against a real
httpbin-like backend on 127.0.0.1: concurrent callers trip the breaker, and the stats
lines the task greps (``grep httpbin | grep pending``) say what happened.

The backend holds each request until the test has seen callers refused, so the breaker
trips on every run, with no timing in the assertions.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from meshlib import Mesh
from meshlib.admin import AdminServer
from meshlib.controlplane import ControlPlane
from tests.support import UvicornThread, service_objects, write_config

URL = "http://httpbin.default.svc.cluster.local:8000/get"
CLUSTER = "outbound|8000||httpbin.default.svc.cluster.local"
CALLERS, CALLS = 3, 10  # fortio -c 3 -n 30, as the task's second run

# The task's DestinationRule, verbatim (samples/httpbin circuit-breaking task).
DESTINATION_RULE = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: httpbin
spec:
  host: httpbin
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 1
      http:
        http1MaxPendingRequests: 1
        maxRequestsPerConnection: 1
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 3m
      maxEjectionPercent: 100
"""


@dataclass
class Httpbin:
    """``GET /get`` answers once ``release`` is set (or at once when it is)."""

    release: threading.Event = field(default_factory=threading.Event)
    served: int = 0

    async def __call__(self, scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        assert scope["type"] == "http"
        for _ in range(2000):  # bounded: at most ~20 s held
            if self.release.is_set():
                break
            await asyncio.sleep(0.01)
        self.served += 1
        body = b'{"url": "http://httpbin:8000/get"}'
        await send(  # type: ignore[operator]
            {"type": "http.response.start", "status": 200,
             "headers": [(b"content-type", b"application/json")]}
        )  # fmt: skip
        await send({"type": "http.response.body", "body": body})  # type: ignore[operator]


@dataclass
class Task:
    mesh: Mesh
    admin: AdminServer
    backend: Httpbin
    outcomes: list[object]


def _call(client: httpx.Client, backend: Httpbin, refused: list[object]) -> object:
    try:
        response = client.get(URL)
    except httpx.HTTPError as exc:  # today's raise mode: CircuitBreakerOpen
        refused.append(exc)
        backend.release.set()  # the breaker tripped: let the held calls finish
        return exc
    if response.status_code == 503:
        refused.append(response)
        backend.release.set()
    return response


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Task]:
    backend = Httpbin()
    with UvicornThread(backend) as server:
        config = Path(tmp_path_factory.mktemp("cb")) / "config"
        objects = service_objects("httpbin", 8000, [("127.0.0.1", server.port)])
        write_config(config, [*objects, yaml.safe_load(DESTINATION_RULE)])
        node = "sidecar~127.0.0.1~fortio-1.default~default.svc.cluster.local"
        with (
            ControlPlane(config) as cp,
            Mesh(bootstrap=cp.bootstrap(node_id=node)) as mesh,
            mesh.httpx_client(timeout=30) as client,
            AdminServer(mesh) as admin,
        ):
            refused: list[object] = []
            with ThreadPoolExecutor(CALLERS) as pool:
                outcomes = list(
                    pool.map(lambda _: _call(client, backend, refused), range(CALLERS * CALLS))
                )
            yield Task(mesh, admin, backend, outcomes)


def _pending_lines(admin: AdminServer) -> dict[str, int]:
    """``pilot-agent request GET stats | grep httpbin | grep pending``."""
    text = httpx.get(admin.url + "/stats", timeout=10).text
    out = {}
    for line in text.splitlines():
        if "httpbin" in line and "pending" in line:
            name, _, value = line.rpartition(": ")
            out[name.removeprefix(f"cluster.{CLUSTER};.")] = int(value)
    return out


def _refused(task: Task) -> int:
    return sum(
        1
        for o in task.outcomes
        if isinstance(o, httpx.HTTPError) or getattr(o, "status_code", 200) == 503
    )


def test_the_seven_stats_lines_say_what_happened(task: Task) -> None:
    lines = _pending_lines(task.admin)
    refused = _refused(task)
    ok = sum(1 for o in task.outcomes if getattr(o, "status_code", 0) == 200)
    print(f"circuit-breaking task: {len(task.outcomes)} calls, {ok} x 200, {refused} refused")
    assert refused > 0 and ok > 0 and ok + refused == CALLERS * CALLS
    assert sorted(lines) == [
        "circuit_breakers.default.remaining_pending",
        "circuit_breakers.default.rq_pending_open",
        "circuit_breakers.high.rq_pending_open",
        "upstream_rq_pending_active",
        "upstream_rq_pending_failure_eject",
        "upstream_rq_pending_overflow",
        "upstream_rq_pending_total",
    ]
    assert lines["circuit_breakers.default.remaining_pending"] == 1  # nothing waits now
    assert lines["circuit_breakers.default.rq_pending_open"] == 0
    assert lines["circuit_breakers.high.rq_pending_open"] == 0
    assert lines["upstream_rq_pending_active"] == 0
    assert lines["upstream_rq_pending_failure_eject"] == 0
    assert lines["upstream_rq_pending_overflow"] == refused  # every refused call, once
    # every call that was served either waited pending or had a connection to itself
    assert 1 <= lines["upstream_rq_pending_total"] <= ok
    assert task.backend.served == ok


def test_connection_overflow_is_one_figure_under_both_names(task: Task) -> None:
    families = {
        f.name: f
        for f in text_string_to_metric_families(
            httpx.get(task.admin.url + "/stats/prometheus", timeout=10).text
        )
    }

    def value(name: str, **labels: str) -> float:
        family = families[name.removesuffix("_total")]
        return next(s.value for s in family.samples if s.labels == labels)

    envoy = value("envoy_cluster_upstream_cx_overflow", cluster_name=CLUSTER)
    meshlib = value("meshlib_upstream_cx_overflow_total", cluster=CLUSTER)
    assert envoy == meshlib
    assert value("envoy_cluster_upstream_rq_pending_overflow", cluster_name=CLUSTER) == _refused(
        task
    )
    # the connection kept idle counts against maxConnections: 1, as in Envoy
    breaker = task.mesh.snapshot.clusters[CLUSTER].breaker
    assert breaker is not None
    open_now = 1.0 if breaker.active("connections") >= 1 else 0.0
    assert value("envoy_cluster_circuit_breakers_default_cx_open", cluster_name=CLUSTER) == open_now
    assert value("envoy_cluster_circuit_breakers_default_remaining_cx", cluster_name=CLUSTER) == (
        1.0 - open_now
    )


def test_refused_calls_are_503_with_x_envoy_overloaded(task: Task) -> None:
    refused = [
        o for o in task.outcomes if not isinstance(o, httpx.Response) or o.status_code != 200
    ]
    assert refused
    for o in refused:
        assert isinstance(o, httpx.Response), o
        assert o.status_code == 503
        assert o.headers.get("x-envoy-overloaded") == "true"


def test_refused_calls_are_not_requests_to_the_endpoint(task: Task) -> None:
    """A call the pool refused never reached httpbin: the endpoint's and the cluster's
    request counts are the served calls only (Envoy counts streams attached to a
    connection), so the endpoint does not show 100% success over calls it never saw."""
    ok = sum(1 for o in task.outcomes if getattr(o, "status_code", 0) == 200)
    text = httpx.get(task.admin.url + "/stats", timeout=10).text
    stats = dict(line.rsplit(": ", 1) for line in text.splitlines() if ": " in line)
    assert int(stats[f"cluster.{CLUSTER};.upstream_rq_total"]) == ok == task.backend.served
    (host,) = task.mesh.snapshot.clusters[CLUSTER].endpoints
    assert host.total_requests == ok
