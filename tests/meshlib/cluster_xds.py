"""Hand-built xDS resources served through the real control plane, and test backends.

``FixedCache`` is a SnapshotCache that ignores what the control plane translates and
serves the resources a test installs; meshlib (API listener ``host:port``) and Envoy
(a socket listener) then read the same clusters and endpoints over real ADS streams.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401  (registers type)
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2,  # noqa: F401  (registers type)
)
from google.protobuf import json_format
from google.protobuf.message import Message

from meshlib.controlplane import ControlPlane
from meshlib.controlplane.xds._cache import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    Resources,
    Snapshot,
    VersionedSnapshotCache,
)

HCM = (
    "type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


class FixedCache(VersionedSnapshotCache):
    """Serves installed resources; the control plane's own translation is ignored."""

    def __init__(self) -> None:
        super().__init__()
        self.fixed = Resources()

    def set_resources(self, resources: Resources) -> Snapshot:
        return super().set_resources(self.fixed)

    def install(self, *messages: Message) -> Snapshot:
        table: dict[str, dict[str, Message]] = {}
        for m in messages:
            type_url = f"type.googleapis.com/{m.DESCRIPTOR.full_name}"
            name = m.cluster_name if type_url == ENDPOINT_TYPE else m.name
            table.setdefault(type_url, {})[name] = m
        self.fixed = Resources(shared=table)
        return super().set_resources(self.fixed)


def control_plane(tmp: Path) -> tuple[ControlPlane, FixedCache]:
    (tmp / "empty.yaml").write_text("")
    cache = FixedCache()
    return ControlPlane(tmp / "empty.yaml", cache=cache), cache


def cluster(name: str, **fields: Any) -> cluster_pb2.Cluster:
    spec: dict[str, Any] = {
        "name": name,
        "type": "EDS",
        "eds_cluster_config": {"eds_config": {"ads": {}, "resource_api_version": "V3"}},
        "connect_timeout": "1s",
    }
    spec.update(fields)
    return json_format.ParseDict(spec, cluster_pb2.Cluster())


def cla(name: str, ports: Iterable[int], **extra: Any) -> endpoint_pb2.ClusterLoadAssignment:
    eps = [
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}
        for p in ports
    ]
    spec = {"cluster_name": name, "endpoints": [{"locality": {"zone": "z"}, "lb_endpoints": eps}]}
    spec.update(extra)
    return json_format.ParseDict(spec, endpoint_pb2.ClusterLoadAssignment())


def routes(
    name: str, entries: Sequence[tuple[str, str, dict[str, Any]]]
) -> route_pb2.RouteConfiguration:
    """``entries``: (path prefix, cluster, extra RouteAction fields)."""
    rs = [
        {"match": {"prefix": prefix}, "route": {"cluster": c, "timeout": "10s", **extra}}
        for prefix, c, extra in entries
    ]
    spec = {"name": name, "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": rs}]}
    return json_format.ParseDict(spec, route_pb2.RouteConfiguration())


def _hcm(route_name: str) -> dict[str, Any]:
    return {
        "@type": HCM,
        "stat_prefix": "diff",
        "rds": {
            "config_source": {"ads": {}, "resource_api_version": "V3"},
            "route_config_name": route_name,
        },
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}],
    }


def api_listener(name: str, route_name: str) -> listener_pb2.Listener:
    spec = {"name": name, "api_listener": {"api_listener": _hcm(route_name)}}
    return json_format.ParseDict(spec, listener_pb2.Listener())


def socket_listener(name: str, route_name: str) -> listener_pb2.Listener:
    spec = {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": _hcm(route_name),
                    }
                ]
            }
        ],
    }
    return json_format.ParseDict(spec, listener_pb2.Listener())


class Backend:
    """An ASGI app answering its own port; ``status`` is mutable; ``gate`` holds requests."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.port = 0
        self.hits = 0
        self.in_flight = 0
        self.gate: threading.Event | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.hits += 1
        self.in_flight += 1
        try:
            gate = self.gate
            if gate is not None:
                for _ in range(200):  # bounded: at most ~10 s
                    if gate.is_set():
                        break
                    await asyncio.sleep(0.05)
            body = str(self.port).encode()
            headers = [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode()),
            ]
            await send({"type": "http.response.start", "status": self.status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        finally:
            self.in_flight -= 1


TYPES = (CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE)
