"""``meshlib proxy-status``: the control plane's connected clients and, per resource
type, whether what it sent them was ACKed, as ``istioctl proxy-status`` prints it::

    meshlib control-plane --config mesh/ --debug-port 15014 &
    meshlib proxy-status --control-plane http://127.0.0.1:15014

It reads the control plane's ``/debug/syncz``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import httpx

from ._cli_registry import Handler, command

__all__ = ["DEFAULT_CONTROL_PLANE", "proxy_status_text"]

DEFAULT_CONTROL_PLANE = "http://127.0.0.1:15014"
_COLUMNS = (
    ("CDS", "type.googleapis.com/envoy.config.cluster.v3.Cluster"),
    ("LDS", "type.googleapis.com/envoy.config.listener.v3.Listener"),
    ("EDS", "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"),
    ("RDS", "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"),
    ("SDS", "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"),
)


def _cell(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "NOT SENT"
    status = str(entry["status"])
    if status == "SYNCED":
        return f"SYNCED ({entry['sent']})"
    if status == "STALE":
        acked = entry["acked"] or "none"
        return f"STALE (sent {entry['sent']}, acked {acked})"
    if status == "NACKED":
        return f"NACKED ({entry['sent']})"
    return status


def proxy_status_text(clients: list[dict[str, Any]]) -> str:
    """The table (one row per client) and, below it, every NACK's error."""
    from ._cli_status import table

    rows = []
    nacks = []
    for c in clients:
        types = c["types"]
        rows.append(
            (
                c["node_id"] or "(no node id)",
                c["kind"],
                c["protocol"],
                *(_cell(types.get(url)) for _, url in _COLUMNS),
            )
        )
        for url, entry in sorted(types.items()):
            if entry["status"] == "NACKED":
                what = f"{url.rpartition('.')[2]} version {entry['sent']}"
                nacks.append(f"{c['node_id']} NACKED {what}: {entry['error']}")
    out = table(("NAME", "KIND", "PROTOCOL", *(name for name, _ in _COLUMNS)), rows)
    if not clients:
        out += "\n(no client is connected)"
    if nacks:
        out += "\n\n" + "\n".join(nacks)
    return out + "\n"


@command("proxy-status", "the control plane's clients and their xDS sync state (istioctl's)")
def _proxy_status(parser: argparse.ArgumentParser) -> Handler:
    default = os.environ.get("MESHLIB_CONTROL_PLANE_DEBUG", DEFAULT_CONTROL_PLANE)
    parser.add_argument(
        "--control-plane",
        default=default,
        help="the control plane's debug URL (its --debug-port; default: "
        "$MESHLIB_CONTROL_PLANE_DEBUG or %(default)s)",
    )
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")

    def run(args: argparse.Namespace) -> int:
        url = args.control_plane.rstrip("/") + "/debug/syncz"
        try:
            response = httpx.get(url, timeout=10)
            response.raise_for_status()
            clients = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            print(f"meshlib: cannot read {url}: {exc}", file=sys.stderr)
            return 1
        if args.output == "json":
            print(json.dumps(clients, indent=2))
        else:
            print(proxy_status_text(clients), end="")
        return 0

    return run
