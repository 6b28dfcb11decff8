"""What the admin endpoints show, computed from the live mesh on each request.

Cluster and endpoint figures come from the state the data path keeps anyway (endpoint
counters, the cluster circuit breaker, outlier ejection), so they are right whether or
not the adapters report to the telemetry seam; latency percentiles come from the
telemetry registry when attempts are reported there.
"""

from __future__ import annotations

from typing import Any

from envoy.config.endpoint.v3 import endpoint_pb2

from ..telemetry import Sample, Telemetry
from ._config_dump import ENDPOINTS, client_dump, resource_status, xds_client_of
from ._stats import cluster_samples

__all__ = [
    "breaker_words",
    "calls_by",
    "clusters_json",
    "clusters_text",
    "ready",
    "snapshot_samples",
    "xds_json",
]

_Locality = tuple[str, str, str, int]


def _localities(dump: Any) -> dict[str, dict[str, _Locality]]:
    """EDS name -> endpoint address -> (region, zone, sub_zone, priority)."""
    out: dict[str, dict[str, _Locality]] = {}
    if dump is None:
        return out
    for c in dump.generic_xds_configs:
        if c.type_url != ENDPOINTS or not c.HasField("xds_config"):
            continue
        cla = endpoint_pb2.ClusterLoadAssignment()
        if not c.xds_config.Unpack(cla):
            continue
        hosts = out.setdefault(c.name, {})
        for loc in cla.endpoints:
            where = (loc.locality.region, loc.locality.zone, loc.locality.sub_zone, loc.priority)
            for lb in loc.lb_endpoints:
                sa = lb.endpoint.address.socket_address
                host = f"[{sa.address}]" if ":" in sa.address else sa.address
                hosts[f"{host}:{sa.port_value}"] = where
    return out


def _pct(ok: int, total: int) -> float | None:
    return round(100.0 * ok / total, 2) if total else None


def _host(
    state: Any, where: _Locality | None, telemetry: Telemetry | None, cluster: str
) -> dict[str, Any]:
    ep = state.endpoint
    total, failures, active = state.total_requests, state.failures, state.active_requests
    done = max(0, total - active)
    region, zone, sub_zone, priority = where or ("", "", "", 0)
    p50 = p99 = None
    if telemetry is not None:
        hist = telemetry.registry.upstream_time
        p50 = hist.quantile((cluster, state.address), 0.5)
        p99 = hist.quantile((cluster, state.address), 0.99)
    return {
        "address": {"socket_address": {"address": ep.host, "port_value": ep.port}},
        "hostname": state.address,
        "stats": [
            {"name": "rq_total", "value": total, "type": "COUNTER"},
            {"name": "rq_error", "value": failures, "type": "COUNTER"},
            {"name": "rq_success", "value": max(0, done - failures), "type": "COUNTER"},
            {"name": "rq_active", "value": active, "type": "GAUGE"},
        ],
        "health_status": {
            "eds_health_status": ep.health,
            "failed_outlier_check": bool(state.ejected),
        },
        "weight": ep.weight,
        "priority": priority,
        "locality": {"region": region, "zone": zone, "sub_zone": sub_zone},
        "rq_total": total,
        "rq_error": failures,
        "rq_active": active,
        "success_rate": _pct(done - failures, done),
        "latency_ewma_ms": round(state.ewma * 1000.0, 3),
        "latency_p50_ms": None if p50 is None else round(p50, 3),
        "latency_p99_ms": None if p99 is None else round(p99, 3),
        "ejected": bool(state.ejected),
        "healthy": bool(ep.usable and not state.ejected),
        "degraded": bool(ep.health == "DEGRADED" and not state.ejected),
    }


def _breaker(view: Any) -> dict[str, Any]:
    breaker = getattr(view, "breaker", None)
    if breaker is None:
        return {"max_requests": None, "active_requests": 0, "open": False, "summary": "none"}
    t = breaker.thresholds()
    active = breaker.active("requests")
    stats = getattr(breaker, "stats", None)
    return {
        "max_connections": t.max_connections,
        "max_pending_requests": t.max_pending_requests,
        "max_requests": t.max_requests,
        "max_retries": t.max_retries,
        "active_requests": active,
        "active_retries": breaker.active("retries"),
        "rq_overflow": getattr(stats, "rq_overflow", 0),
        "retry_overflow": getattr(stats, "retry_overflow", 0),
        "active_connections": breaker.active("connections"),
        "pending_requests": breaker.active("pending"),
        "cx_overflow": getattr(stats, "cx_overflow", 0),
        "rq_pending_overflow": getattr(stats, "rq_pending_overflow", 0),
        "rq_drop_overload": getattr(stats, "rq_drop_overload", 0),
        "rq_pending_total": getattr(stats, "rq_pending_total", 0),
        "open": active >= t.max_requests,
        "pending_open": breaker.active("pending") >= t.max_pending_requests,
        "cx_open": breaker.active("connections") >= t.max_connections,
        "summary": breaker_words(t),
    }


UNLIMITED = 0xFFFFFFFF  # Istio's "no limit" (max uint32)
_LIMIT_WORDS = (
    ("max_connections", "connection"),
    ("max_pending_requests", "pending"),
    ("max_requests", "request"),
    ("max_retries", "retry"),
)


def _limit(value: int, noun: str) -> str:
    if value >= UNLIMITED:
        plural = {"connection": "connections", "request": "requests", "retry": "retries"}
        return f"unlimited {plural.get(noun, noun)}"
    if noun == "pending" or value == 1:
        return f"max {value} {noun}"
    return f"max {value} {'retries' if noun == 'retry' else noun + 's'}"


def breaker_words(t: Any) -> str:
    """A cluster's thresholds in words: ``max 1 connection, max 1 pending, unlimited
    requests, max 3 retries`` (a retry budget instead of max_retries when set); ``no
    limits`` when every threshold is unlimited (istiod's default)."""
    parts = [_limit(int(getattr(t, attr)), noun) for attr, noun in _LIMIT_WORDS[:3]]
    budget = getattr(t, "retry_budget", None)
    if budget is not None:
        parts.append(
            f"retries within {budget.budget_percent:g}% of active requests"
            f" (min {budget.min_retry_concurrency})"
        )
    else:
        parts.append(_limit(int(t.max_retries), "retry"))
    if all(p.startswith("unlimited") for p in parts):
        return "no limits"
    return ", ".join(parts)


def _ejections(view: Any) -> int:
    detector = next((h.outlier for h in view.endpoints if getattr(h, "outlier", None)), None)
    return int(getattr(detector, "ejections_total", 0))


def calls_by(telemetry: Telemetry | None, by: str) -> dict[str, dict[str, Any]]:
    """Calls per ``cluster``, per ``route`` (keyed ``route name|cluster``: istiod names
    many routes ``default``) or per ``route_name`` as the application saw them: total, success
    rate (a status under 500, as Istio counts it), counts by response flag (``HTTP
    503`` for a 5xx without a flag) and by code (``meshlib_route_requests_total``)."""
    out: dict[str, dict[str, Any]] = {}
    if telemetry is None:
        return out
    for key, n in telemetry.registry.routes.values.items():
        code, flag = key[2], key[3]
        name = key[1] if by == "cluster" else f"{key[0]}|{key[1]}" if by == "route" else key[0]
        slot = out.setdefault(name, {"total": 0, "ok": 0, "by_flag": {}, "by_code": {}})
        slot["total"] += int(n)
        failed = not 0 < int(code) < 500  # Istio's success: a response under 500
        if not failed:
            slot["ok"] += int(n)
        shown = flag if flag != "-" else (f"HTTP {code}" if failed else "")
        if shown:  # a flag (DI on a success too), or a 5xx the upstream sent
            slot["by_flag"][shown] = slot["by_flag"].get(shown, 0) + int(n)
        slot["by_code"][code] = slot["by_code"].get(code, 0) + int(n)
    for slot in out.values():
        slot["success_rate"] = _pct(slot["ok"], slot["total"])
    return out


def clusters_json(mesh: Any, telemetry: Telemetry | None = None) -> dict[str, Any]:
    """Envoy's ``/clusters?format=json`` shape (``cluster_statuses``, ``host_statuses``)
    with meshlib's live figures (success rate, latency, breaker, ejection, and the calls
    by response flag) added."""
    snapshot = mesh.snapshot
    calls = calls_by(telemetry, "cluster")
    localities = _localities(client_dump(mesh))
    statuses = []
    for name in sorted(snapshot.clusters):
        view = snapshot.clusters[name]
        resource = view.resource
        eds_name = getattr(resource, "eds_service_name", "") or name
        where = localities.get(eds_name, {})
        hosts = [_host(s, where.get(s.address), telemetry, name) for s in view.endpoints]
        total = sum(h["rq_total"] - h["rq_active"] for h in hosts)
        errors = sum(h["rq_error"] for h in hosts)
        outlier = getattr(resource, "outlier_detection", None)
        lb = getattr(getattr(resource, "lb", None), "policy", None)
        statuses.append(
            {
                "name": name,
                "observability_name": name,
                "added_via_api": True,
                "lb_policy": lb or getattr(resource, "lb_policy", ""),
                "error": view.error,
                "circuit_breakers": _breaker(view),
                "outlier_detection": {
                    "enabled": outlier is not None,
                    "ejected": sum(1 for h in hosts if h["ejected"]),
                    "ejections_total": _ejections(view),
                },
                "rq_total": sum(h["rq_total"] for h in hosts),
                "rq_active": sum(h["rq_active"] for h in hosts),
                "rq_error": errors,
                "success_rate": _pct(total - errors, total),
                "healthy": sum(1 for h in hosts if h["healthy"]),
                "calls": calls.get(
                    name, {"total": 0, "ok": 0, "by_flag": {}, "by_code": {}, "success_rate": None}
                ),
                "host_statuses": hosts,
            }
        )
    return {"cluster_statuses": statuses, "snapshot_version": snapshot.version}


def clusters_text(doc: dict[str, Any]) -> str:
    """Envoy's text ``/clusters``: ``cluster::host::field::value`` lines."""
    lines: list[str] = []
    for c in doc["cluster_statuses"]:
        name = c["name"]
        lines.append(f"{name}::observability_name::{c['observability_name']}")
        if c["error"]:
            lines.append(f"{name}::error::{c['error']}")
        for key in ("max_connections", "max_pending_requests", "max_requests", "max_retries"):
            value = c["circuit_breakers"].get(key)
            if value is not None:
                lines.append(f"{name}::default_priority::{key}::{value}")
        lines.append(f"{name}::added_via_api::true")
        for h in c["host_statuses"]:
            prefix = f"{name}::{h['hostname']}"
            for stat in h["stats"]:
                lines.append(f"{prefix}::{stat['name']}::{stat['value']}")
            flags = "/failed_outlier_check" if h["ejected"] else ""
            if h["health_status"]["eds_health_status"] not in ("HEALTHY", "UNKNOWN"):
                flags += "/failed_eds_health"
            lines.append(f"{prefix}::health_flags::{flags or 'healthy'}")
            lines.append(f"{prefix}::weight::{h['weight']}")
            for key in ("region", "zone", "sub_zone"):
                lines.append(f"{prefix}::{key}::{h['locality'][key]}")
            rate = h["success_rate"]
            lines.append(f"{prefix}::success_rate::{-1.0 if rate is None else rate}")
            lines.append(f"{prefix}::latency_ewma_ms::{h['latency_ewma_ms']}")
    return "\n".join(lines) + ("\n" if lines else "")


def xds_json(mesh: Any, telemetry: Telemetry | None = None) -> dict[str, Any]:
    """xDS connection state and the status of every resource the client holds."""
    client = xds_client_of(mesh)
    servers_of = getattr(client, "servers", None)
    servers = servers_of() if callable(servers_of) else []
    uris = [getattr(s, "server_uri", None) for s in servers]
    dump = client_dump(mesh)
    rows = resource_status(dump) if dump is not None else []
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    node = getattr(getattr(client, "node", None), "id", "")
    doc: dict[str, Any] = {
        "connected": any(u is not None for u in uris),
        "servers": uris,
        "node": node,
        "snapshot_version": mesh.snapshot.version,
        "counts": counts,
        "resources": rows,
    }
    if telemetry is not None:
        updates: dict[str, dict[str, int]] = {}
        for (rtype, accepted), n in sorted(telemetry.registry.xds_updates.values.items()):
            slot = updates.setdefault(rtype, {"accepted": 0, "rejected": 0})
            slot["accepted" if accepted == "true" else "rejected"] += int(n)
        doc["updates"] = updates
        doc["reported_state"] = telemetry.xds_state
        if telemetry.xds_state != "unknown":  # the client reports its stream state
            doc["connected"] = telemetry.xds_state == "connected"
    return doc


def ready(mesh: Any) -> tuple[bool, str]:
    """Ready once every requested target is settled: no xDS resource still awaited and
    every resolved listener has its route table (or a definite error)."""
    dump = client_dump(mesh)
    if dump is not None:
        waiting = [r["name"] for r in resource_status(dump) if r["status"] == "REQUESTED"]
        if waiting:
            return False, "waiting for " + ", ".join(sorted(waiting)[:5])
    snapshot = mesh.snapshot
    pending = [n for n, v in snapshot.listeners.items() if v.routes is None and not v.error]
    if pending:
        return False, "unresolved " + ", ".join(sorted(pending)[:5])
    return True, "LIVE"


def snapshot_samples(mesh: Any) -> list[Sample]:
    """Envoy's per-cluster statistics at scrape time (see ``_stats.cluster_samples``)."""
    return cluster_samples(mesh)
