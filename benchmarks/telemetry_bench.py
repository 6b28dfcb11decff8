"""Per-call cost of the telemetry seam: ``python -m benchmarks.run --only telemetry_bench``.

A call with one attempt (``start_call``, ``route``, ``attempt``, ``attempt.end``,
``call.end``) is timed against a bare loop doing the same Python calls into empty
functions; each timed loop ends with a read of the stats registry, so the fold of the
queued facts into it (``meshlib/telemetry/_tally.py``) is part of the cost. Three
variants: the OpenTelemetry API with no SDK configured (the global no-op providers: the
case the library must keep nearly free), and, for reference, the SDK with an in-memory
span exporter and metric reader (no target: that cost is the SDK's).
Rounds of the variants are interleaved and the fastest round of each is reported (as
``timeit`` advises: slower rounds measure other load on the machine, not the code).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from meshlib import Call
from meshlib.cluster import Outcome, OutcomeKind
from meshlib.telemetry import Telemetry

from ._harness import Row, check, row

__all__ = ["run"]

CLUSTER = "outbound|9080||reviews.default.svc.cluster.local"
CALL = Call("reviews.default.svc.cluster.local:9080", "GET", "/reviews/1")
OK = Outcome(OutcomeKind.RESPONSE, status=200, latency=0.001)
#: Overhead budget per call with no SDK: ~2% of a ~500 µs mesh HTTP call on loopback.
TARGET_US = 10.0


class _Bare:
    """The same call shape into empty functions: what the loop itself costs."""

    stats = None

    def start_call(self, call: Call, protocol: str = "http") -> _Bare:
        return self

    def route(self, name: str, cluster: str) -> None:
        pass

    def attempt(self, endpoint: str, cluster: str, attempt_number: int = 0) -> _Bare:
        return self

    def end(self, outcome: Outcome | None = None, status: int | None = None) -> None:
        pass


def _loop(seam: object, n: int) -> float:
    """Seconds per call over ``n`` calls through ``seam``."""
    t: Telemetry = seam  # type: ignore[assignment]  # duck-typed: _Bare has the same shape
    start = time.perf_counter()
    for _ in range(n):
        rec = t.start_call(CALL, "http")
        rec.route("default", CLUSTER)
        attempt = rec.attempt("127.0.0.1:8001", CLUSTER, attempt_number=1)
        attempt.end(OK)
        rec.end(status=200)
    if t.stats is not None:
        t.stats.flush()  # what is still queued: the read folds it in
    return (time.perf_counter() - start) / n


def _sdk_telemetry() -> tuple[Telemetry, Callable[[], None]]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])

    def reset() -> None:
        exporter.clear()

    return Telemetry(tracer_provider, meter_provider), reset


def run(quick: bool = False) -> list[Row]:
    n = 2_000 if quick else 20_000
    rounds = 3 if quick else 7
    noop = Telemetry()  # the global providers: no SDK is configured in this process
    if noop.tracer() is not None or noop.otel() is not None:
        raise RuntimeError("telemetry_bench: a global OpenTelemetry SDK is configured")
    sdk, reset = _sdk_telemetry()
    variants: dict[str, Callable[[], float]] = {
        "bare": lambda: _loop(_Bare(), n),
        "noop": lambda: _loop(noop, n),
        "sdk": lambda: _loop(sdk, n // 4),
    }
    for fn in variants.values():  # warm up
        fn()
    samples: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            samples[name].append(fn())
            reset()
    bare, noop_s, sdk_s = (min(samples[k]) * 1e6 for k in ("bare", "noop", "sdk"))
    overhead = noop_s - bare
    target, passed = check(overhead, "<=", TARGET_US, " µs")
    group = "telemetry"
    return [
        row("bare loop, per call", round(bare, 3), "µs", group=group, variant="bare"),
        row(
            "telemetry, no SDK (API no-op providers), per call",
            round(noop_s, 3),
            "µs",
            group=group,
            variant="noop",
        ),
        row(
            "telemetry overhead per call, no SDK",
            round(overhead, 3),
            "µs",
            target=target,
            passed=passed,
            group=group,
            note="one call with one attempt; its share of the stats registry's fold included",
        ),
        row(
            "telemetry overhead ratio, no SDK vs bare loop",
            round(noop_s / bare, 2) if bare else None,
            "x",
            group=group,
        ),
        row(
            "telemetry with the OpenTelemetry SDK (in-memory), per call",
            round(sdk_s, 3),
            "µs",
            group=group,
            variant="sdk",
            note="reference: the SDK's own cost (3 spans, 6 metric updates)",
        ),
    ]


if __name__ == "__main__":
    for r in run(quick=True):
        print(r)
