"""``/stats`` and ``/stats/prometheus``: Envoy's cluster statistics read from live state,
the xDS client's figures, and the ``?filter=`` regular expression (RE2, bounded).

Cluster statistics are computed at scrape time from the state the data path keeps
anyway (endpoint counters, the cluster circuit breaker, the outlier detector), under
the names Envoy gives them (``cluster.<name>.circuit_breakers.default.remaining_pending``,
``cluster.<name>.upstream_rq_pending_overflow``, where ``<name>`` is the cluster's
``alt_stat_name`` when it has one, as in Envoy: istiod's ``<cluster name>;``) and, in
Prometheus, the names Istio's Envoy exports
(``envoy_cluster_upstream_rq_pending_overflow{cluster_name=<cluster name>}``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import re2

from ..telemetry import Sample, Telemetry

__all__ = [
    "MAX_FILTER",
    "MAX_PARAMS",
    "FilterError",
    "cluster_samples",
    "compile_filter",
    "filtered",
    "ratelimit_samples",
    "stat_prefixes",
    "xds_samples",
]

#: Longest ``?filter=`` accepted (characters), and most query parameters.
MAX_FILTER = 1024
MAX_PARAMS = 16
#: RE2's memory budget for one compiled filter (bytes): a bigger program is refused.
_FILTER_MEM = 1 << 20
_PRIORITIES = (("DEFAULT", "default"), ("HIGH", "high"))
_UNLIMITED = 0xFFFFFFFF


class FilterError(ValueError):
    """A ``?filter=`` that is refused (the message says why)."""


def compile_filter(pattern: str) -> Any:
    """An RE2 program for ``pattern`` (Envoy's ``/stats?filter=`` syntax), matched with
    ``search``; raises FilterError for one too long, too big or invalid. RE2 matches in
    time linear in the text, so no pattern can stall the process."""
    if len(pattern) > MAX_FILTER:
        raise FilterError(f"filter: longer than {MAX_FILTER} characters ({len(pattern)})")
    options = re2.Options()
    options.max_mem = _FILTER_MEM
    options.log_errors = False
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        raise FilterError(f"filter: invalid regular expression: {exc}") from None


def _sample(cluster: str, stat: str, kind: str, value: float, prefix: str) -> Sample:
    prom = stat.replace(".", "_")
    return Sample(
        f"envoy_cluster_{prom}",
        kind,
        (("cluster_name", cluster),),
        float(value),
        f"Envoy's cluster.{stat}",
        envoy=f"cluster.{prefix}.{stat}",
    )


def stat_prefixes(mesh: Any) -> dict[str, str]:
    """Cluster name -> the name Envoy's stats use for it: the Cluster's ``alt_stat_name``
    when set (istiod sets ``<name>;``), read from the xDS client's dump."""
    from envoy.config.cluster.v3 import cluster_pb2

    from ._config_dump import CLUSTER, client_dump

    dump = client_dump(mesh)
    out: dict[str, str] = {}
    if dump is None:
        return out
    for c in dump.generic_xds_configs:
        if c.type_url == CLUSTER and c.HasField("xds_config"):
            cluster = cluster_pb2.Cluster()
            if c.xds_config.Unpack(cluster) and cluster.alt_stat_name:
                out[c.name] = cluster.alt_stat_name
    return out


def _breaker_values(breaker: Any) -> dict[str, tuple[str, float]]:
    """``circuit_breakers.<priority>.*`` gauges: 1 while a threshold is reached, and
    what remains under each (``remaining_*``: DEFAULT only, the thresholds istiod's
    clusters set ``track_remaining`` on)."""
    out: dict[str, tuple[str, float]] = {}
    for priority, label in _PRIORITIES:
        if breaker is None:
            t = None
            active = dict.fromkeys(("connections", "pending", "requests", "retries"), 0)
        else:
            t = breaker.thresholds(priority)
            active = {
                k: breaker.active(k, priority)
                for k in ("connections", "pending", "requests", "retries")
            }
        limits = {
            "cx": (t.max_connections if t else _UNLIMITED, active["connections"]),
            "rq_pending": (t.max_pending_requests if t else _UNLIMITED, active["pending"]),
            "rq": (t.max_requests if t else _UNLIMITED, active["requests"]),
            "rq_retry": (_retry_limit(breaker, t, priority), active["retries"]),
        }
        remaining = {"cx": "cx", "rq_pending": "pending", "rq": "rq", "rq_retry": "retries"}
        track = priority == "DEFAULT"
        for kind, (limit, n) in limits.items():
            out[f"circuit_breakers.{label}.{kind}_open"] = ("gauge", 1.0 if n >= limit else 0.0)
            if track:
                out[f"circuit_breakers.{label}.remaining_{remaining[kind]}"] = (
                    "gauge",
                    float(max(0, limit - n)),
                )
    return out


def _retry_limit(breaker: Any, t: Any, priority: str) -> int:
    if t is None:
        return _UNLIMITED
    budget = t.retry_budget
    if budget is None:
        return int(t.max_retries)
    requests = breaker.active("requests", priority)
    return int(max(budget.min_retry_concurrency, budget.budget_percent * requests / 100))


def _outlier_values(view: Any) -> dict[str, tuple[str, float]]:
    hosts = view.endpoints
    detector = next((h.outlier for h in hosts if getattr(h, "outlier", None)), None)
    out: dict[str, tuple[str, float]] = {
        "outlier_detection.ejections_active": ("gauge", sum(1 for h in hosts if h.ejected)),
    }
    if detector is None:
        return out
    out["outlier_detection.ejections_total"] = ("counter", detector.ejections_total)
    out["outlier_detection.ejections_overflow"] = ("counter", detector.ejections_overflow)
    for kind, n in sorted(detector.enforced.items()):
        out[f"outlier_detection.ejections_enforced_{kind}"] = ("counter", n)
    out["outlier_detection.ejections_enforced_total"] = ("counter", sum(detector.enforced.values()))
    for kind, n in sorted(detector.detected.items()):
        out[f"outlier_detection.ejections_detected_{kind}"] = ("counter", n)
    return out


def ratelimit_samples(mesh: Any) -> list[Sample]:
    """The local rate limit filters' counters, ``<stat_prefix>.http_local_rate_limit.*``
    as Envoy names them (summed per stat_prefix), read from the Snapshot's route tables."""
    totals: dict[str, dict[str, int]] = {}
    seen: set[int] = set()
    for view in mesh.snapshot.listeners.values():
        table = view.routes
        for limiter in getattr(table, "limiters", {}).values():
            if id(limiter) in seen:
                continue
            seen.add(id(limiter))
            into = totals.setdefault(limiter.config.stat_prefix, {})
            for stat, n in limiter.counts.items():
                into[stat] = into.get(stat, 0) + n
    out = []
    for prefix, counts in sorted(totals.items()):
        for stat, n in sorted(counts.items()):
            name = f"{prefix}.http_local_rate_limit.{stat}"
            out.append(
                Sample(
                    "envoy_" + name.replace(".", "_"),
                    "counter",
                    (),
                    float(n),
                    f"Envoy's {name}",
                    envoy=name,
                )
            )
    return out


def cluster_samples(mesh: Any, telemetry: Telemetry | None = None) -> list[Sample]:
    """Envoy's per-cluster statistics, read from live state at scrape time."""
    retries: dict[str, float] = {}
    if telemetry is not None:
        for (cluster, _reason), n in telemetry.registry.retries.values.items():
            retries[cluster] = retries.get(cluster, 0.0) + n
    out: list[Sample] = []
    prefixes = stat_prefixes(mesh)
    for name, view in sorted(mesh.snapshot.clusters.items()):
        hosts = view.endpoints
        breaker = getattr(view, "breaker", None)
        stats = getattr(breaker, "stats", None)

        def stat(field: str, stats: Any = stats) -> float:
            return float(getattr(stats, field, 0))

        pending = breaker.active("pending") if breaker is not None else 0
        values: dict[str, tuple[str, float]] = {
            "upstream_rq_total": ("counter", sum(h.total_requests for h in hosts)),
            "upstream_rq_active": ("gauge", sum(h.active_requests for h in hosts)),
            "upstream_rq_error": ("counter", sum(h.failures for h in hosts)),
            "upstream_rq_active_overflow": ("counter", stat("rq_overflow")),
            "upstream_rq_pending_total": ("counter", stat("rq_pending_total")),
            "upstream_rq_pending_active": ("gauge", pending),
            "upstream_rq_pending_overflow": ("counter", stat("rq_pending_overflow")),
            "upstream_rq_pending_failure_eject": ("counter", stat("rq_pending_failure_eject")),
            "upstream_cx_overflow": ("counter", stat("cx_overflow")),
            "upstream_rq_retry": ("counter", retries.get(name, 0.0)),
            "upstream_rq_retry_overflow": ("counter", stat("retry_overflow")),
            "upstream_rq_drop_overload": ("counter", stat("rq_drop_overload")),
            "membership_total": ("gauge", len(hosts)),
            "membership_healthy": (
                "gauge",
                sum(1 for h in hosts if h.endpoint.usable and not h.ejected),
            ),
            "membership_degraded": (
                "gauge",
                sum(1 for h in hosts if h.endpoint.health == "DEGRADED" and not h.ejected),
            ),
        }
        values.update(_breaker_values(breaker))
        values.update(_outlier_values(view))
        prefix = prefixes.get(name, name)
        out.extend(_sample(name, k, kind, v, prefix) for k, (kind, v) in values.items())
        # meshlib's own name for the same connection overflows (one counter, two names)
        out.append(
            Sample(
                "meshlib_upstream_cx_overflow_total",
                "counter",
                (("cluster", name),),
                stat("cx_overflow"),
                "Connections the cluster's max_connections refused (Envoy's upstream_cx_overflow)",
            )
        )
    return out


def xds_samples(mesh: Any, telemetry: Telemetry | None) -> list[Sample]:
    """``meshlib_xds_connected`` and ``meshlib_xds_updates_total`` from the xDS client
    (its live streams and the responses it ACKed or NACKed); the telemetry hooks
    (``Telemetry.xds_connection``/``xds_update``) are used where no client reports."""
    from ._config_dump import xds_client_of

    client = xds_client_of(mesh)
    counts_of = getattr(client, "update_counts", None)
    servers_of = getattr(client, "servers", None)
    if not callable(counts_of) or not callable(servers_of):
        return []
    connected = any(s is not None for s in servers_of())
    updates: dict[tuple[str, ...], float] = {}
    for (type_url, accepted), n in counts_of().items():
        key = (type_url.rpartition(".")[2] or type_url, "true" if accepted else "false")
        updates[key] = updates.get(key, 0.0) + n
    if telemetry is not None:  # the registry's series give way to the client's figures
        registry = telemetry.registry
        registry.xds_connected.set((), 1.0 if connected else 0.0)
        with telemetry.stats.lock:
            registry.xds_updates._values.update(updates)
        return []
    out = [
        Sample(
            "meshlib_xds_connected",
            "gauge",
            (),
            1.0 if connected else 0.0,
            "1 while the ADS stream is connected",
        )
    ]
    out += [
        Sample(
            "meshlib_xds_updates_total",
            "counter",
            (("type", t), ("accepted", a)),
            n,
            "xDS updates ACKed (true) or NACKed",
        )
        for (t, a), n in sorted(updates.items())
    ]
    return out


def filtered(lines: Iterable[tuple[str, str]], query: Mapping[str, list[str]]) -> Any:
    """The lines whose name matches ``?filter=`` (see compile_filter)."""
    pattern = (query.get("filter") or [""])[0]
    if not pattern:
        return list(lines)
    rx = compile_filter(pattern)
    return [(n, v) for n, v in lines if rx.search(n)]
