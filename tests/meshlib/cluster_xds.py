"""xDS resources (from ``xds_client.builders``) served through the real control plane, and
test backends.

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
from google.protobuf.message import Message

from meshlib.controlplane import (
    ENDPOINT_TYPE,
    ControlPlane,
    Resources,
    Snapshot,
    VersionedSnapshotCache,
)
from xds_client import builders as b


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
    """An EDS cluster over ADS; ``fields`` (Envoy JSON) add to it."""
    return b.cluster(name, **fields)


def cla(name: str, ports: Iterable[int], **extra: Any) -> endpoint_pb2.ClusterLoadAssignment:
    """Endpoints on 127.0.0.1 in one locality (zone ``z``), weights left unset."""
    return b.endpoints(name, [("127.0.0.1", p) for p in ports], zone="z", weight=None, **extra)


def routes(
    name: str, entries: Sequence[tuple[str, str, dict[str, Any]]]
) -> route_pb2.RouteConfiguration:
    """``entries``: (path prefix, cluster, extra RouteAction fields)."""
    rs = [
        {"match": {"prefix": prefix}, "route": {"cluster": c, "timeout": "10s", **extra}}
        for prefix, c, extra in entries
    ]
    return b.virtual_hosts(name, [{"name": "all", "domains": ["*"], "routes": rs}])


def api_listener(name: str, route_name: str) -> listener_pb2.Listener:
    return b.api_listener(name, route_name, fault=False, stat_prefix="diff")


def socket_listener(name: str, route_name: str) -> listener_pb2.Listener:
    """Envoy's listener on 127.0.0.1 (ephemeral port) with the same HCM."""
    return b.socket_listener(name, route_name, fault=False, stat_prefix="diff")


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
