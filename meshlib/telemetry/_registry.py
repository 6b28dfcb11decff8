"""A tiny in-process metrics registry, independent of OpenTelemetry.

The Telemetry hooks update it alongside the OpenTelemetry instruments, so the admin
server can answer ``/stats`` and ``/stats/prometheus`` with no SDK installed. Series are
keyed by a tuple of label values (in the metric's ``labels`` order); one lock guards
every update, which is a handful of dictionary operations.

Per-request facts are not added here one by one: the data path queues them and a
*flusher* (see :meth:`StatsRegistry.on_read`) folds them in whenever the registry is
read, so every read (``get``, ``values``, ``snapshot``, ``quantile``, the renderings)
first calls :meth:`StatsRegistry.flush`.
"""

from __future__ import annotations

import bisect
import math
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

__all__ = ["DURATION_BUCKETS_MS", "Counter", "Gauge", "Histogram", "Sample", "StatsRegistry"]

#: Histogram bucket bounds in milliseconds (Istio's duration buckets, trimmed).
DURATION_BUCKETS_MS: tuple[float, ...] = (
    0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
)  # fmt: skip

Labels = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Sample:
    """One series value as the admin server renders it."""

    name: str
    kind: str  # "counter" | "gauge"
    labels: tuple[tuple[str, str], ...]
    value: float
    help: str = ""
    envoy: str = ""  # the name in Envoy's /stats text, when it differs


class _Metric:
    kind = ""

    def __init__(self, registry: StatsRegistry, name: str, help: str, labels: Sequence[str]):
        self.name = name
        self.help = help
        self.labels = tuple(labels)
        self._registry = registry
        self._lock = registry.lock

    def _check(self, key: Labels) -> None:
        if len(key) != len(self.labels):
            raise ValueError(f"{self.name}: expected labels {self.labels}, got {key}")


class Counter(_Metric):
    """A monotonically increasing value per label set."""

    kind = "counter"

    def __init__(self, registry: StatsRegistry, name: str, help: str, labels: Sequence[str]):
        super().__init__(registry, name, help, labels)
        self._values: dict[Labels, float] = {}

    @property
    def values(self) -> dict[Labels, float]:
        """Every series' value (after folding in queued facts); read, do not modify."""
        self._registry.flush()
        return self._values

    def add(self, key: Labels, amount: float = 1.0) -> None:
        with self._lock:
            self.add_locked(key, amount)

    def add_locked(self, key: Labels, amount: float = 1.0) -> None:
        """``add`` for a caller already holding the registry's ``lock``."""
        values = self._values
        if key in values:
            values[key] += amount
        else:
            self._check(key)
            values[key] = amount

    def get(self, key: Labels) -> float:
        self._registry.flush()
        with self._lock:
            return self._values.get(key, 0.0)


class Gauge(Counter):
    """A value per label set that goes up and down (or is set)."""

    kind = "gauge"

    def set(self, key: Labels, value: float) -> None:
        self._check(key)
        with self._lock:
            self._values[key] = value


class Histogram(_Metric):
    """Cumulative-bucket histogram per label set, in the unit of ``bounds``."""

    kind = "histogram"

    def __init__(
        self,
        registry: StatsRegistry,
        name: str,
        help: str,
        labels: Sequence[str],
        bounds: Sequence[float] = DURATION_BUCKETS_MS,
    ):
        super().__init__(registry, name, help, labels)
        self.bounds = tuple(bounds)
        # per series: [bucket counts (len(bounds) + 1, the last is +Inf)..., sum, count]
        self._series: dict[Labels, list[float]] = {}

    def observe(self, key: Labels, value: float) -> None:
        with self._lock:
            self.observe_locked(key, value)

    def observe_locked(self, key: Labels, value: float) -> None:
        """``observe`` for a caller already holding the registry's ``lock``."""
        row = self._series.get(key)
        if row is None:
            self._check(key)
            row = self._series[key] = [0.0] * (len(self.bounds) + 3)
        row[bisect.bisect_left(self.bounds, value)] += 1
        row[-2] += value
        row[-1] += 1

    def snapshot(self, key: Labels) -> list[float] | None:
        self._registry.flush()
        with self._lock:
            row = self._series.get(key)
            return list(row) if row is not None else None

    def quantile(self, key: Labels, q: float) -> float | None:
        """Estimated ``q`` quantile (0-1) by linear interpolation inside its bucket."""
        row = self.snapshot(key)
        return None if row is None else quantile_of(self.bounds, row, q)


def quantile_of(bounds: Sequence[float], row: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile of a histogram row as :class:`Histogram` stores it."""
    count = row[-1]
    if count <= 0:
        return None
    rank = q * count
    seen = 0.0
    for i, n in enumerate(row[: len(bounds) + 1]):
        if n and seen + n >= rank:
            lower = bounds[i - 1] if i > 0 else 0.0
            upper = bounds[i] if i < len(bounds) else bounds[-1]
            return lower + (upper - lower) * max(0.0, rank - seen) / n
        seen += n
    return bounds[-1]


class StatsRegistry:
    """Named counters, gauges and histograms; rendered in Prometheus and Envoy text."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._metrics: dict[str, _Metric] = {}
        self._flushers: list[weakref.WeakMethod[Callable[[], None]]] = []

    def on_read(self, flush: Callable[[], None]) -> None:
        """Call the bound method ``flush`` (without ``lock`` held) before every read: it
        folds facts queued by the data path into the metrics. Held weakly: a flusher goes
        away with its owner."""
        self._flushers.append(weakref.WeakMethod(flush))

    def flush(self) -> None:
        """Fold every queued fact into the metrics (each read does this first)."""
        dead = False
        for ref in self._flushers:
            fn = ref()
            if fn is None:
                dead = True
            else:
                fn()
        if dead:
            self._flushers = [ref for ref in self._flushers if ref() is not None]

    def _add(self, metric: _Metric) -> _Metric:
        existing = self._metrics.get(metric.name)
        if existing is not None:
            if type(existing) is not type(metric) or existing.labels != metric.labels:
                raise ValueError(f"metric {metric.name!r} already registered differently")
            return existing
        self._metrics[metric.name] = metric
        return metric

    def counter(self, name: str, help: str, labels: Sequence[str] = ()) -> Counter:
        m = self._add(Counter(self, name, help, labels))
        assert isinstance(m, Counter)
        return m

    def gauge(self, name: str, help: str, labels: Sequence[str] = ()) -> Gauge:
        m = self._add(Gauge(self, name, help, labels))
        assert isinstance(m, Gauge)
        return m

    def histogram(
        self,
        name: str,
        help: str,
        labels: Sequence[str] = (),
        bounds: Sequence[float] = DURATION_BUCKETS_MS,
    ) -> Histogram:
        m = self._add(Histogram(self, name, help, labels, bounds))
        assert isinstance(m, Histogram)
        return m

    def get(self, name: str) -> _Metric | None:
        return self._metrics.get(name)

    def metrics(self) -> list[_Metric]:
        return sorted(self._metrics.values(), key=lambda m: m.name)

    # -- rendering ----------------------------------------------------------------------
    def prometheus(self, extra: Iterable[Sample] = ()) -> str:
        """Prometheus text exposition format 0.0.4 (``extra``: samples computed at scrape)."""
        self.flush()
        out: list[str] = []
        for m in self.metrics():
            out.append(f"# HELP {m.name} {_help(m.help)}")
            out.append(f"# TYPE {m.name} {m.kind}")
            with self.lock:
                if isinstance(m, Histogram):
                    rows = [(k, list(v)) for k, v in sorted(m._series.items())]
                else:
                    assert isinstance(m, Counter)
                    items = sorted(m._values.items())
            if isinstance(m, Histogram):
                for key, row in rows:
                    base = list(zip(m.labels, key, strict=True))
                    cumulative = 0.0
                    for bound, n in zip((*m.bounds, math.inf), row, strict=False):
                        cumulative += n
                        le = "+Inf" if bound == math.inf else _num(bound)
                        out.append(
                            f"{m.name}_bucket{_labels([*base, ('le', le)])} {_num(cumulative)}"
                        )
                    out.append(f"{m.name}_sum{_labels(base)} {_num(row[-2])}")
                    out.append(f"{m.name}_count{_labels(base)} {_num(row[-1])}")
            else:
                for key, value in items:
                    out.append(f"{m.name}{_labels(zip(m.labels, key, strict=True))} {_num(value)}")
        by_name: dict[str, list[Sample]] = {}
        for s in extra:
            by_name.setdefault(s.name, []).append(s)
        for name in sorted(by_name):
            samples = by_name[name]
            out.append(f"# HELP {name} {_help(samples[0].help)}")
            out.append(f"# TYPE {name} {samples[0].kind}")
            out.extend(f"{name}{_labels(s.labels)} {_num(s.value)}" for s in samples)
        return "\n".join(out) + "\n"

    def envoy_text(self, extra: Iterable[Sample] = ()) -> list[tuple[str, str]]:
        """``(name, value)`` lines in the spirit of Envoy's ``/stats``: counters and gauges
        as numbers, histograms as ``P50(...) P90(...) P99(...) count(...)``."""
        self.flush()
        lines: list[tuple[str, str]] = []
        for s in extra:
            lines.append((s.envoy or _flat(s.name, s.labels), _num(s.value)))
        for m in self.metrics():
            with self.lock:
                if isinstance(m, Histogram):
                    hist = [(k, list(v)) for k, v in m._series.items()]
                else:
                    assert isinstance(m, Counter)
                    plain = list(m._values.items())
            if isinstance(m, Histogram):
                for key, row in hist:
                    parts = [
                        f"P{int(q * 100)}({_num(round(quantile_of(m.bounds, row, q) or 0, 3))})"
                        for q in (0.5, 0.9, 0.99)
                    ]
                    parts.append(f"count({_num(row[-1])})")
                    lines.append((_flat(m.name, zip(m.labels, key, strict=True)), " ".join(parts)))
            else:
                for key, value in plain:
                    lines.append((_flat(m.name, zip(m.labels, key, strict=True)), _num(value)))
        lines.sort()
        return lines


def _num(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return "{" + inner + "}" if inner else ""


def _flat(name: str, pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f"{k}={v}" for k, v in pairs)
    return f"{name}{{{inner}}}" if inner else name
