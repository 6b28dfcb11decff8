"""``meshlib status`` and ``meshlib config-dump``: read a running mesh's admin server and
print tables in the manner of ``istioctl proxy-status`` / ``istioctl proxy-config``::

    meshlib status --admin http://127.0.0.1:15000
    meshlib config-dump --type clusters
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import httpx

from ._cli_registry import Handler, command
from .admin._config_dump import render_errors
from .admin._routes import route_rows

__all__ = ["DEFAULT_ADMIN", "config_tables", "status_text", "table"]

DEFAULT_ADMIN = "http://127.0.0.1:15000"
_TYPES = ("clusters", "listeners", "routes", "endpoints")


class AdminUnreachable(Exception):
    pass


def _get(admin: str, path: str) -> Any:
    url = admin.rstrip("/") + path
    try:
        response = httpx.get(url, timeout=10)
    except httpx.HTTPError as exc:
        raise AdminUnreachable(f"cannot reach the admin server at {url}: {exc}") from None
    if response.status_code != 200:
        raise AdminUnreachable(f"{url}: HTTP {response.status_code}: {response.text.strip()}")
    return response.json()


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns separated by three spaces (istioctl's layout)."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def _breaker_text(cb: dict[str, Any]) -> str:
    """``max 1 connection, max 1 pending, unlimited requests, max 3 retries; 28 refused``."""
    if cb.get("max_requests") is None:
        return "-"
    text = str(cb.get("summary") or "")
    refused = int(cb.get("rq_overflow", 0)) + int(cb.get("rq_pending_overflow", 0))
    if refused:
        text += f"; {refused} refused"
    reached = [
        what
        for key, what in (
            ("open", "requests"),
            ("pending_open", "pending"),
            ("cx_open", "connections"),
        )
        if cb.get(key)
    ]
    if reached:
        text += " (at the limit: " + ", ".join(reached) + ")"
    return text


def _flags_text(by_flag: dict[str, int]) -> str:
    """``UO 28, FI 3`` (most first)."""
    ordered = sorted(by_flag.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{flag} {n}" for flag, n in ordered) or "-"


def status_text(xds: dict[str, Any], clusters: dict[str, Any]) -> str:
    """The ``meshlib status`` report from ``/xds`` and ``/clusters?format=json``."""
    counts = xds.get("counts", {})
    if not xds.get("connected"):
        sync = "DISCONNECTED"
    elif counts.get("NACKED"):
        sync = "NACKED"
    elif counts.get("REQUESTED"):
        sync = "SYNCING"
    else:
        sync = "SYNCED"
    servers = ", ".join(s for s in xds.get("servers", []) if s) or "-"
    out = [
        f"xDS: {sync}   server: {servers}   node: {xds.get('node') or '-'}   "
        f"snapshot: v{xds.get('snapshot_version', 0)}",
        "",
        table(
            ("RESOURCE", "TYPE", "VERSION", "STATUS", "ERROR"),
            [
                (r["name"], r["type"], r["version"] or "-", r["status"], r["error"])
                for r in xds.get("resources", [])
            ],
        ),
        "",
    ]
    crow, erow = [], []
    for c in clusters.get("cluster_statuses", []):
        cb = c["circuit_breakers"]
        breaker = _breaker_text(cb)
        calls = c.get("calls") or {}
        hosts = c["host_statuses"]
        crow.append(
            (
                c["name"],
                c["lb_policy"] or "-",
                len(hosts),
                c["healthy"],
                c["rq_active"],
                calls.get("total") or c["rq_total"],  # calls the app made, else attempts
                _pct(calls["success_rate"] if calls.get("total") else c["success_rate"]),
                _flags_text(calls.get("by_flag", {})),
                breaker,
                c["error"] or "",
            )
        )
        for h in hosts:
            latency = f"{h['latency_ewma_ms']:.1f}ms" if h["rq_total"] else "-"
            erow.append(
                (
                    h["hostname"],
                    h["health_status"]["eds_health_status"],
                    "FAILED" if h["ejected"] else "OK",
                    c["name"],
                    h["rq_total"],
                    _pct(h["success_rate"]),
                    latency,
                )
            )
    out.append(
        table(
            (
                "CLUSTER",
                "LB",
                "ENDPOINTS",
                "HEALTHY",
                "ACTIVE",
                "CALLS",
                "SUCCESS",
                "ERRORS",
                "BREAKER",
                "ERROR",
            ),
            crow,
        )
    )
    out.append("")
    out.append(
        table(
            ("ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER", "REQUESTS", "SUCCESS", "LATENCY"),
            erow,
        )
    )
    return "\n".join(out) + "\n"


def _section(dump: dict[str, Any], kind: str) -> dict[str, Any]:
    for c in dump.get("configs", []):
        if c.get("@type", "").endswith(kind):
            return dict(c)
    return {}


def _cluster_rows(dump: dict[str, Any]) -> list[tuple[Any, ...]]:
    rows = []
    for entry in _section(dump, "ClustersConfigDump").get("dynamic_active_clusters", []):
        cluster = entry.get("cluster", {})
        name = cluster.get("name", "")
        parts = name.split("|")
        fqdn, port, subset, direction = name, "-", "-", "-"
        if len(parts) == 4:
            direction, port, subset, fqdn = parts[0], parts[1], parts[2] or "-", parts[3]
        kind = cluster.get("type", "EDS" if "eds_cluster_config" in cluster else "-")
        lb = cluster.get("lb_policy", "ROUND_ROBIN")
        rows.append(
            (fqdn, port, subset, direction.upper(), kind, lb, entry.get("client_status", ""))
        )
    return rows


def _listener_rows(dump: dict[str, Any]) -> list[tuple[Any, ...]]:
    rows = []
    for entry in _section(dump, "ListenersConfigDump").get("dynamic_listeners", []):
        listener = entry.get("active_state", {}).get("listener", {})
        hcm = listener.get("api_listener", {}).get("api_listener", {})
        route = hcm.get("rds", {}).get("route_config_name") or ("inline" if hcm else "-")
        sa = listener.get("address", {}).get("socket_address", {})
        kind = "API" if hcm else "SOCKET"
        rows.append(
            (
                entry.get("name", ""),
                sa.get("address", "-"),
                sa.get("port_value", "-"),
                kind,
                f"Route: {route}",
                entry.get("client_status", ""),
            )
        )
    return rows


def _route_rows(dump: dict[str, Any]) -> list[tuple[Any, ...]]:
    rows = []
    for r in route_rows(dump):
        domains = r["domains"]
        shown = ", ".join(domains[:2]) + (f" + {len(domains) - 2} more" if len(domains) > 2 else "")
        rows.append(
            (r["route_config"], r["virtual_host"], shown, r["match"], r["targets"], r["fault"])
        )
    return rows


def _endpoint_rows(dump: dict[str, Any]) -> list[tuple[Any, ...]]:
    rows = []
    for entry in _section(dump, "EndpointsConfigDump").get("dynamic_endpoint_configs", []):
        cla = entry.get("endpoint_config", {})
        for loc in cla.get("endpoints", []):
            where = loc.get("locality", {})
            locality = "/".join(v for v in (where.get("region"), where.get("zone")) if v) or "-"
            for lb in loc.get("lb_endpoints", []):
                sa = lb.get("endpoint", {}).get("address", {}).get("socket_address", {})
                address = f"{sa.get('address', '')}:{sa.get('port_value', '')}"
                rows.append(
                    (
                        address,
                        lb.get("health_status", "UNKNOWN"),
                        locality,
                        cla.get("cluster_name", ""),
                    )
                )
    return rows


_TABLES = {
    "clusters": (
        ("SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE", "LB", "STATUS"),
        _cluster_rows,
    ),
    "listeners": (("NAME", "ADDRESS", "PORT", "TYPE", "DESTINATION", "STATUS"), _listener_rows),
    "routes": (("NAME", "VHOST NAME", "DOMAINS", "MATCH", "CLUSTER", "FAULT"), _route_rows),
    "endpoints": (("ENDPOINT", "STATUS", "LOCALITY", "CLUSTER"), _endpoint_rows),
}


def config_tables(dump: dict[str, Any], types: Sequence[str] = _TYPES) -> str:
    """``/config_dump`` as one table per type, in the order given."""
    parts = []
    for kind in types:
        headers, rows_of = _TABLES[kind]
        parts.append(f"{kind.upper()}\n{table(headers, rows_of(dump))}")
    return "\n\n".join(parts) + "\n"


def _admin_arg(parser: argparse.ArgumentParser) -> None:
    default = os.environ.get("MESHLIB_ADMIN", DEFAULT_ADMIN)
    parser.add_argument(
        "--admin", default=default, help="admin server URL (default: $MESHLIB_ADMIN or %(default)s)"
    )


@command("status", "xDS sync state, clusters and endpoints of a running mesh (its admin server)")
def _status(parser: argparse.ArgumentParser) -> Handler:
    _admin_arg(parser)

    def run(args: argparse.Namespace) -> int:
        try:
            xds = _get(args.admin, "/xds")
            clusters = _get(args.admin, "/clusters?format=json")
        except AdminUnreachable as exc:
            print(f"meshlib: {exc}", file=sys.stderr)
            return 1
        print(status_text(xds, clusters), end="")
        return 0

    return run


@command("config-dump", "a running mesh's xDS config as tables (or JSON), from its admin server")
def _config_dump(parser: argparse.ArgumentParser) -> Handler:
    _admin_arg(parser)
    parser.add_argument("--type", choices=_TYPES, help="only this resource type")
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")

    def run(args: argparse.Namespace) -> int:
        types = [args.type] if args.type else list(_TYPES)
        try:
            dump = _get(args.admin, "/config_dump?types=" + ",".join(types))
        except AdminUnreachable as exc:
            print(f"meshlib: {exc}", file=sys.stderr)
            return 1
        if args.output == "json":
            print(json.dumps(dump, indent=2))
        else:
            print(config_tables(dump, types), end="")
        errors = render_errors(dump)
        for error in errors:
            print(f"meshlib: config-dump: {error}", file=sys.stderr)
        return 1 if errors else 0

    return run


from . import _cli_proxy_status  # noqa: E402, F401 (registers proxy-status)
