"""The no-SDK data path: facts queued per request, folded into the registry on read.

Every test reads the registry only through its public reads (``get``, ``values``,
``quantile``, the renderings), which must see every call that ended before the read.
"""

from __future__ import annotations

import gc
import math
import threading

from opentelemetry import trace
from opentelemetry.metrics import NoOpMeterProvider

from meshlib import Call, NoHealthyUpstream
from meshlib._outcome import Outcome, OutcomeKind
from meshlib.telemetry import StatsRegistry, Telemetry, _tally
from tests.telemetry.test_spans import CALL, CLUSTER

EP = "127.0.0.1:8001"
OK = Outcome(OutcomeKind.RESPONSE, status=200, latency=0.004)  # 4 ms: the (2.5, 5] bucket


def quiet() -> Telemetry:
    return Telemetry(trace.NoOpTracerProvider(), NoOpMeterProvider(), workload="w")


def one_call(t: Telemetry, outcome: Outcome = OK, status: int = 200) -> None:
    rec = t.start_call(CALL)
    rec.route("r", CLUSTER)
    rec.attempt(EP, CLUSTER, attempt_number=1).end(outcome)
    rec.end(status=status)


def test_active_attempts_are_seen_between_start_and_end() -> None:
    t = quiet()
    rec = t.start_call(CALL)
    rec.route("r", CLUSTER)
    attempt = rec.attempt(EP, CLUSTER)
    assert t.registry.active.get((CLUSTER,)) == 1  # a read folds the start in
    assert t.registry.upstream_rq.values == {}
    attempt.end(OK)
    assert t.registry.active.get((CLUSTER,)) == 0
    assert t.registry.upstream_rq.get((CLUSTER, EP, "response", "200")) == 1
    assert t.registry.requests.values == {}  # the call has not ended
    rec.end(status=200)
    (key,) = t.registry.requests.values
    assert key[1] == "w" and key[8] == "200" and key[10] == "-"


def test_attempt_time_is_the_outcome_latency_and_call_time_is_measured() -> None:
    t = quiet()
    for _ in range(3):
        one_call(t)
    row = t.registry.upstream_time.snapshot((CLUSTER, EP))
    assert row is not None
    assert row[-1] == 3 and math.isclose(row[-2], 12.0)  # 3 x 4 ms
    assert row[3] == 3  # DURATION_BUCKETS_MS[3] == 5: all in (2.5, 5]
    (key,) = t.registry.requests.values
    calls = t.registry.duration.snapshot(key)
    assert calls is not None and calls[-1] == 3 and calls[-2] >= 0


def test_calls_group_by_their_labels() -> None:
    t = quiet()
    one_call(t)
    one_call(t, Outcome(OutcomeKind.RESPONSE, status=503, latency=0.001), status=503)
    one_call(t)
    failed = t.start_call(CALL)
    failed.route("r", CLUSTER)
    failed.attempt(EP).end(Outcome(OutcomeKind.CONNECT_FAILURE, latency=0.001))
    failed.end(error=NoHealthyUpstream("none", cluster=CLUSTER, reason="no_healthy_upstream"))
    got = {(k[8], k[10]): v for k, v in t.registry.requests.values.items()}
    assert got == {("200", "-"): 2, ("503", "-"): 1, ("503", "UH"): 1}
    assert t.registry.upstream_rq.get((CLUSTER, EP, "response", "200")) == 2
    assert t.registry.upstream_rq.get((CLUSTER, EP, "connect_failure", "0")) == 1
    text = t.stats.prometheus()
    assert 'response_code="503",grpc_response_status="",response_flags="UH"' in text


def test_retries_are_counted_when_the_retry_starts() -> None:
    t = quiet()
    rec = t.start_call(CALL)
    rec.route("r", CLUSTER)
    rec.attempt(EP, attempt_number=1).end(Outcome(OutcomeKind.RESET, latency=0.001))
    rec.attempt("127.0.0.1:8002", attempt_number=2, retry_reason="reset")
    assert t.registry.retries.get((CLUSTER, "reset")) == 1
    assert t.registry.active.get((CLUSTER,)) == 1


def test_the_backlog_is_folded_without_a_read() -> None:
    t = quiet()
    for _ in range(_tally.BACKLOG - 1):
        one_call(t)
    assert len(t.tally.calls) == _tally.BACKLOG - 1
    one_call(t)
    assert t.tally.calls == [] and t.tally.attempts == [] and t.tally.started == []
    assert sum(t.registry.requests.values.values()) == _tally.BACKLOG


def test_concurrent_calls_and_reads_lose_nothing() -> None:
    t = quiet()
    threads, per_thread = 4, 600
    stop = threading.Event()
    seen_negative: list[float] = []

    def reader() -> None:
        while not stop.is_set():
            value = t.registry.active.get((CLUSTER,))
            if value < 0:
                seen_negative.append(value)
            t.stats.envoy_text()

    def caller() -> None:
        for _ in range(per_thread):
            one_call(t)

    r = threading.Thread(target=reader)
    r.start()
    workers = [threading.Thread(target=caller) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    stop.set()
    r.join(timeout=60)
    total = threads * per_thread
    assert sum(t.registry.requests.values.values()) == total
    assert t.registry.upstream_rq.get((CLUSTER, EP, "response", "200")) == total
    assert t.registry.active.get((CLUSTER,)) == 0
    assert seen_negative == []
    row = t.registry.upstream_time.snapshot((CLUSTER, EP))
    assert row is not None and row[-1] == total


def test_a_shared_registry_folds_every_telemetry_and_forgets_dead_ones() -> None:
    stats = StatsRegistry()
    a = Telemetry(trace.NoOpTracerProvider(), NoOpMeterProvider(), stats=stats)
    b = Telemetry(trace.NoOpTracerProvider(), NoOpMeterProvider(), stats=stats)
    one_call(a)
    one_call(b)
    del a
    gc.collect()  # a's queued call went with it; b's is still folded on read
    assert b.registry.upstream_rq.get((CLUSTER, EP, "response", "200")) == 1
    one_call(b)
    assert "meshlib_upstream_rq_total{" in stats.prometheus()
    assert b.registry.upstream_rq.get((CLUSTER, EP, "response", "200")) == 2


def test_no_sdk_is_decided_once_then_not_asked_again() -> None:
    t = quiet()
    assert t.quiet_until == 0.0
    one_call(t)
    assert t.quiet_until == math.inf  # no-op providers are final
    grpc_call = Call("greeter:50051", "POST", "/helloworld.Greeter/SayHello")
    rec = t.start_call(grpc_call, protocol="grpc")
    rec.route("", CLUSTER)
    rec.end(grpc_status=5)
    keys = [k for k in t.registry.requests.values if k[7] == "grpc"]
    assert [(k[8], k[9]) for k in keys] == [("200", "5")]
