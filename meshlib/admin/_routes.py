"""Routes in words, from ``/config_dump``'s JSON: what a route matches (path, headers,
query parameters), where it sends calls (clusters and weights), and the faults it
injects. ``meshlib config-dump``'s ROUTES table and the dashboard's route view (the
admin ``/routes`` page) both use it."""

from __future__ import annotations

from typing import Any

__all__ = [
    "describe_fault",
    "describe_match",
    "describe_targets",
    "duration_words",
    "route_rows",
    "routes_json",
]

_PATH_KEYS = ("prefix", "path", "path_separated_prefix")
_DENOMINATORS = {"HUNDRED": 100, "TEN_THOUSAND": 10_000, "MILLION": 1_000_000}
FAULT_FILTER = "envoy.filters.http.fault"


def _string_match(m: dict[str, Any]) -> str:
    for key, op in (("exact", "="), ("prefix", "^="), ("suffix", "$="), ("contains", "~=")):
        if key in m:
            return f"{op}{m[key]!s}"
    if "safe_regex" in m:
        return f"~/{m['safe_regex'].get('regex', '')}/"
    return " present"  # present_match


def _header(h: dict[str, Any]) -> str:
    name = str(h.get("name", ""))
    if "string_match" in h:
        text = name + _string_match(h["string_match"])
    elif "exact_match" in h:
        text = f"{name}={h['exact_match']}"
    elif "safe_regex_match" in h:
        text = f"{name}~/{h['safe_regex_match'].get('regex', '')}/"
    elif "prefix_match" in h:
        text = f"{name}^={h['prefix_match']}"
    elif h.get("present_match") is False:
        text = f"{name} absent"
    else:
        text = f"{name} present"
    return ("not " + text) if h.get("invert_match") else text


def describe_match(match: dict[str, Any]) -> str:
    """``prefix=/ header end-user=jason query v=2``."""
    parts = [f"{k}={match[k]}" for k in _PATH_KEYS if k in match]
    if "safe_regex" in match:
        parts.append(f"regex=/{match['safe_regex'].get('regex', '')}/")
    if not parts:
        parts.append("*")
    parts += [f"header {_header(h)}" for h in match.get("headers", [])]
    for q in match.get("query_parameters", []):
        cond = _string_match(q["string_match"]) if "string_match" in q else " present"
        parts.append(f"query {q.get('name', '')}{cond}")
    if match.get("case_sensitive") is False:
        parts.append("(case-insensitive)")
    return " ".join(parts)


def describe_targets(route: dict[str, Any]) -> str:
    """``reviews v1`` or ``outbound|9080|v1|reviews... 90%, ...|v3|... 10%``; a redirect
    or direct response in words."""
    action = route.get("route")
    if action is None:
        if "redirect" in route:
            r = route["redirect"]
            return "redirect " + " ".join(f"{k}={v}" for k, v in sorted(r.items()))
        if "direct_response" in route:
            return f"direct response {route['direct_response'].get('status', '')}"
        return "-"
    if "cluster" in action:
        return str(action["cluster"])
    clusters = action.get("weighted_clusters", {}).get("clusters", [])
    total = sum(int(c.get("weight", 0)) for c in clusters) or 1
    return ", ".join(
        f"{c.get('name', '')} {100 * int(c.get('weight', 0)) / total:g}%" for c in clusters
    )


def duration_words(text: str) -> str:
    """A protobuf JSON duration (``0.020s``) in words (``20 ms``); ``0s`` is ``0``."""
    if not text.endswith("s"):
        return text
    try:
        seconds = float(text[:-1])
    except ValueError:
        return text
    if seconds < 1:
        return f"{seconds * 1000:g} ms" if seconds else "0"
    return f"{seconds:g} s"


def _percent(p: dict[str, Any] | None) -> str:
    if not p:
        return "0%"
    n = int(p.get("numerator", 0))
    d = _DENOMINATORS.get(p.get("denominator", "HUNDRED"), 100)
    return f"{100 * n / d:g}%"


def describe_fault(route: dict[str, Any]) -> str:
    """``abort 500 to 100%; delay 7s to 100%`` from the route's fault filter config."""
    fault = route.get("typed_per_filter_config", {}).get(FAULT_FILTER)
    if not fault:
        return ""
    if "config" in fault and "@type" in fault and "abort" not in fault and "delay" not in fault:
        fault = fault["config"]  # wrapped in a FilterConfig
    parts = []
    abort = fault.get("abort")
    if abort:
        status = abort.get("http_status") or (
            f"grpc {abort['grpc_status']}" if "grpc_status" in abort else "from header"
        )
        parts.append(f"abort {status} to {_percent(abort.get('percentage'))}")
    delay = fault.get("delay")
    if delay:
        how = duration_words(delay["fixed_delay"]) if "fixed_delay" in delay else "from header"
        parts.append(f"delay {how} to {_percent(delay.get('percentage'))}")
    return "; ".join(parts)


def _sections(dump: dict[str, Any]) -> list[dict[str, Any]]:
    for c in dump.get("configs", []):
        if str(c.get("@type", "")).endswith("RoutesConfigDump"):
            return [e.get("route_config", {}) for e in c.get("dynamic_route_configs", [])]
    return []


def route_rows(dump: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per route of every route configuration in a ``/config_dump``."""
    rows = []
    for config in _sections(dump):
        for vhost in config.get("virtual_hosts", []):
            domains = vhost.get("domains", [])
            for route in vhost.get("routes", []):
                action = route.get("route", {})
                retry = action.get("retry_policy") or vhost.get("retry_policy") or {}
                rows.append(
                    {
                        "route_config": config.get("name", ""),
                        "virtual_host": vhost.get("name", ""),
                        "domains": domains,
                        "name": route.get("name", ""),
                        "match": describe_match(route.get("match", {})),
                        "targets": describe_targets(route),
                        "fault": describe_fault(route),
                        # Envoy: unset is 15 s, 0 disables it
                        "timeout": duration_words(action.get("timeout", "15s")),
                        "clusters": _clusters_of(route),
                        "retries": (
                            f"{retry.get('num_retries', 1)} on {retry['retry_on']}"
                            if retry.get("retry_on")
                            else ""
                        ),
                    }
                )
    return rows


def _clusters_of(route: dict[str, Any]) -> list[str]:
    action = route.get("route") or {}
    if "cluster" in action:
        return [str(action["cluster"])]
    return [str(c.get("name", "")) for c in action.get("weighted_clusters", {}).get("clusters", [])]


def routes_json(dump: dict[str, Any], calls: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``{"routes": [...]}``: each route's row and the calls it took (``calls`` keyed
    ``route name|cluster``, summed over the route's clusters)."""
    rows = route_rows(dump)
    for row in rows:
        total: dict[str, Any] = {"total": 0, "ok": 0, "by_flag": {}, "by_code": {}}
        for cluster in row["clusters"]:
            got = calls.get(f"{row['name']}|{cluster}")
            if got is None:
                continue
            total["total"] += got["total"]
            total["ok"] += got["ok"]
            for field in ("by_flag", "by_code"):
                for k, v in got[field].items():
                    total[field][k] = total[field].get(k, 0) + v
        n = total["total"]
        total["success_rate"] = round(100.0 * total["ok"] / n, 2) if n else None
        row["calls"] = total
    return {"routes": rows}
