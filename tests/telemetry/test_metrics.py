"""Metrics of the telemetry seam: the SDK's in-memory reader and the in-process registry
must agree, for a realistic sequence (a retried call, an overflow, an ejection, xDS)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from meshlib import Call, CircuitBreakerOpen
from meshlib._outcome import Outcome, OutcomeKind
from meshlib.telemetry import ISTIO_LABELS, StatsRegistry, destination_of, response_flags
from tests.telemetry.conftest import Otel
from tests.telemetry.test_spans import CALL, CLUSTER, two_attempts

LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"


def by_attrs(points: list[Any]) -> dict[tuple[tuple[str, Any], ...], Any]:
    return {tuple(sorted(p.attributes.items())): p for p in points}


def scenario(otel: Otel) -> None:
    t = otel.telemetry
    t.xds_connection("connected")
    t.xds_update(LDS, accepted=True)
    t.xds_update(CDS, accepted=True)
    t.xds_update(CDS, accepted=False)
    two_attempts(t, {})
    overflow = t.start_call(CALL)
    overflow.route("reviews-route", CLUSTER)
    overflow.end(error=CircuitBreakerOpen("full", cluster=CLUSTER, limit="max_requests"))
    t.outlier_ejection(CLUSTER, "127.0.0.1:8001", True)
    t.outlier_ejection(CLUSTER, "127.0.0.1:8001", True)  # no change: counted once
    t.outlier_ejection(CLUSTER, "127.0.0.1:8003", True)
    t.outlier_ejection(CLUSTER, "127.0.0.1:8003", False)


def test_istio_standard_metrics(otel: Otel) -> None:
    scenario(otel)
    requests = otel.points("istio_requests_total")
    assert len(requests) == 2
    common = {
        "reporter": "source",
        "source_workload": "productpage",
        "source_workload_namespace": "default",
        "destination_service": "reviews.default.svc.cluster.local",
        "destination_service_name": "reviews",
        "destination_service_namespace": "default",
        "destination_version": "unknown",
        "request_protocol": "http",
        "grpc_response_status": "",
        "connection_security_policy": "unknown",
    }
    ok = {**common, "response_code": "200", "response_flags": "-"}
    refused = {**common, "response_code": "503", "response_flags": "UO"}
    got = {tuple(sorted(p.attributes.items())): p.value for p in requests}
    assert got == {tuple(sorted(ok.items())): 1, tuple(sorted(refused.items())): 1}
    durations = otel.points("istio_request_duration_milliseconds")
    assert sorted(p.count for p in durations) == [1, 1]
    assert all(p.sum >= 0 for p in durations)
    assert set(durations[0].attributes) == set(ISTIO_LABELS)


def test_meshlib_cluster_and_endpoint_metrics(otel: Otel) -> None:
    scenario(otel)
    rq = by_attrs(otel.points("meshlib_upstream_rq_total"))
    key_503 = (
        ("cluster", CLUSTER),
        ("endpoint", "127.0.0.1:8001"),
        ("outcome", "response"),
        ("response_code", "503"),
    )
    key_200 = (
        ("cluster", CLUSTER),
        ("endpoint", "127.0.0.1:8002"),
        ("outcome", "response"),
        ("response_code", "200"),
    )
    assert {k: p.value for k, p in rq.items()} == {key_503: 1, key_200: 1}
    times = by_attrs(otel.points("meshlib_upstream_rq_time"))
    assert {k: p.count for k, p in times.items()} == {
        (("cluster", CLUSTER), ("endpoint", "127.0.0.1:8001")): 1,
        (("cluster", CLUSTER), ("endpoint", "127.0.0.1:8002")): 1,
    }
    (active,) = otel.points("meshlib_upstream_rq_active")
    assert active.value == 0  # both attempts ended
    (retry,) = otel.points("meshlib_upstream_rq_retry_total")
    assert dict(retry.attributes) == {"cluster": CLUSTER, "reason": "5xx"}
    assert retry.value == 1
    # calls refused by the breaker (meshlib_upstream_cx_overflow_total counts connections)
    (overflow,) = otel.points("meshlib_upstream_rq_overflow_total")
    assert overflow.value == 1 and dict(overflow.attributes) == {"cluster": CLUSTER}
    (ejected,) = otel.points("meshlib_outlier_ejections_active")
    assert ejected.value == 1
    (ejections,) = otel.points("meshlib_outlier_ejections_total")
    assert ejections.value == 2
    xds = {
        p.attributes["type"] + "/" + p.attributes["accepted"]: p.value
        for p in otel.points("meshlib_xds_updates_total")
    }
    assert xds == {"Listener/true": 1, "Cluster/true": 1, "Cluster/false": 1}
    (connected,) = otel.points("meshlib_xds_connected")
    assert connected.value == 1
    otel.telemetry.xds_connection("disconnected")
    (connected,) = otel.points("meshlib_xds_connected")
    assert connected.value == 0


def test_registry_agrees_with_the_sdk(otel: Otel) -> None:
    scenario(otel)
    reg = otel.telemetry.registry
    assert sum(reg.requests.values.values()) == 2
    assert reg.retries.get((CLUSTER, "5xx")) == 1
    assert reg.overflow.get((CLUSTER,)) == 1
    assert reg.active.get((CLUSTER,)) == 0
    assert reg.ejections_active.get((CLUSTER,)) == 1
    assert reg.ejections_total.get((CLUSTER,)) == 2
    assert reg.xds_updates.get(("Cluster", "false")) == 1
    assert reg.xds_connected.get(()) == 1
    assert otel.telemetry.xds_state == "connected"
    text = otel.telemetry.stats.prometheus()
    assert "# TYPE istio_requests_total counter" in text
    assert "# TYPE meshlib_upstream_rq_time histogram" in text
    line = next(
        ln for ln in text.splitlines() if ln.startswith("istio_requests_total{") and "UO" in ln
    )
    assert 'response_code="503"' in line and line.endswith(" 1")
    buckets = [
        ln
        for ln in text.splitlines()
        if ln.startswith("meshlib_upstream_rq_time_bucket{") and "8001" in ln
    ]
    counts = [float(ln.rsplit(" ", 1)[1]) for ln in buckets]
    assert counts == sorted(counts) and counts[-1] == 1  # cumulative, +Inf holds all
    assert 'le="+Inf"' in buckets[-1]
    assert re.search(
        r'^meshlib_upstream_rq_time_count\{cluster="[^"]+",endpoint="127.0.0.1:8001"\} 1$',
        text,
        re.M,
    )


def test_registry_rendering_and_quantiles() -> None:
    reg = StatsRegistry()
    h = reg.histogram("t", "time", ("cluster",), bounds=(1, 10, 100))
    for v in (0.5, 5, 5, 50):
        h.observe(("a",), v)
    assert h.quantile(("a",), 0.5) == pytest.approx(5.5)  # inside the (1, 10] bucket
    assert h.quantile(("b",), 0.5) is None
    c = reg.counter("c_total", "a counter", ("x",))
    c.add(('q"uote',), 2)
    assert 'c_total{x="q\\"uote"} 2' in reg.prometheus()
    envoy = dict(reg.envoy_text())
    assert envoy['c_total{x=q"uote}'] == "2"
    assert envoy["t{cluster=a}"].startswith("P50(5.5) ")
    assert envoy["t{cluster=a}"].endswith("count(4)")
    with pytest.raises(ValueError, match="expected labels"):
        c.add(("a", "b"))
    with pytest.raises(ValueError, match="already registered"):
        reg.gauge("c_total", "again", ("x",))
    assert reg.counter("c_total", "same", ("x",)) is c


def test_destination_and_flags() -> None:
    d = destination_of("outbound|9080|v2|reviews.default.svc.cluster.local")
    assert (d.service, d.name, d.namespace, d.version) == (
        "reviews.default.svc.cluster.local",
        "reviews",
        "default",
        "v2",
    )
    other = destination_of("static-cluster", "api.example.com:443")
    assert (other.service, other.name, other.namespace) == ("api.example.com", "api", "unknown")
    assert response_flags("overflow") == "UO"
    assert response_flags("", Outcome(OutcomeKind.CONNECT_FAILURE)) == "UF"
    assert response_flags() == "-"


def test_grpc_call_metrics_use_http_200_and_grpc_status(otel: Otel) -> None:
    rec = otel.telemetry.start_call(
        Call("greeter:50051", "POST", "/helloworld.Greeter/SayHello"), protocol="grpc"
    )
    rec.route("", "outbound|50051||greeter.default.svc.cluster.local")
    rec.attempt("127.0.0.1:9").end(Outcome(OutcomeKind.RESPONSE, status=200, grpc_status=5))
    rec.end(grpc_status=5)
    (point,) = otel.points("istio_requests_total")
    attrs = dict(point.attributes)
    assert attrs["request_protocol"] == "grpc"
    assert attrs["response_code"] == "200"
    assert attrs["grpc_response_status"] == "5"
    assert attrs["destination_service_name"] == "greeter"
