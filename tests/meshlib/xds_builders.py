"""xDS resources for routing/retry/fault tests (built with ``xds_client.builders``), served
by the project's control plane (its SnapshotCache filled directly) to meshlib and, as
socket listeners, to Envoy."""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2

from meshlib import Mesh
from meshlib.controlplane import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    ControlPlane,
    Resources,
    VersionedSnapshotCache,
)
from xds_client import builders as b

ROUTE_NAME = "test-routes"


class Backend:
    """An ASGI app: /flaky/<key>/<n> answers 503 n times then 200; /slow/<key>/<ms> is slow
    on its first hit; anything else echoes path, host and headers. Hits are counted."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0  # set by whoever serves it
        self.hits: collections.Counter[str] = collections.Counter()
        self.hosts: dict[str, str] = {}  # key -> Host header last seen

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        parts = path.strip("/").split("/")
        key = "/".join(parts[:2])
        self.hits[key] += 1
        status = 200
        if parts[0] in ("flaky", "once") and self.hits[key] <= int(parts[2]):
            status = 503
        if parts[0] == "slow" and self.hits[key] == 1:
            await asyncio.sleep(int(parts[2]) / 1000)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.hosts[key] = headers.get("host", "")
        payload = {
            "backend": self.name,
            "path": path,
            "query": scope["query_string"].decode(),
            "headers": headers,
            "body": body.decode(),
        }
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"x-backend", self.name.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps(payload).encode()})


packed = b.pack


def route_config(
    vhosts: Sequence[dict[str, Any]], name: str = ROUTE_NAME
) -> route_pb2.RouteConfiguration:
    """A RouteConfiguration from Envoy's JSON form of its virtual hosts."""
    return b.virtual_hosts(name, vhosts)


def load_assignment(name: str, ports: Sequence[int]) -> endpoint_pb2.ClusterLoadAssignment:
    """One locality (region ``local``) of endpoints on 127.0.0.1, each weight 1."""
    return b.endpoints(name, [("127.0.0.1", port) for port in ports], zone="", region="local")


def api_listener(name: str, route_name: str = ROUTE_NAME) -> listener_pb2.Listener:
    """A client API listener, as istiod sends to proxyless clients (fault, router)."""
    return b.api_listener(name, route_name)


def socket_listener(name: str, port: int, route_name: str = ROUTE_NAME) -> listener_pb2.Listener:
    """An Envoy listener on 127.0.0.1:port with the same HCM (rds over ads)."""
    return b.socket_listener(name, route_name, port=port, fault=True, stat_prefix="ingress")


def resources(
    listeners: Sequence[listener_pb2.Listener],
    routes: Sequence[route_pb2.RouteConfiguration],
    clusters: dict[str, Sequence[int]],
) -> Resources:
    return Resources(
        shared={
            LISTENER_TYPE: {lis.name: lis for lis in listeners},
            ROUTE_TYPE: {r.name: r for r in routes},
            CLUSTER_TYPE: {name: b.cluster(name) for name in clusters},
            ENDPOINT_TYPE: {name: load_assignment(name, p) for name, p in clusters.items()},
        }
    )


@contextmanager
def serving(tmp_path: Path, res: Resources) -> Iterator[ControlPlane]:
    """The project's control plane serving exactly ``res``."""
    empty = tmp_path / "empty-config"
    empty.mkdir(exist_ok=True)
    cache = VersionedSnapshotCache()
    with ControlPlane(empty, cache=cache) as cp:
        cache.set_resources(res)
        yield cp


def mesh_for(cp: ControlPlane, **kwargs: Any) -> Mesh:
    return Mesh(bootstrap=cp.bootstrap(), resolve_timeout=10, **kwargs)


def decoded(vhosts: Sequence[dict[str, Any]], **config: Any) -> Any:
    """A RouteConfigResource decoded (and validated) from Envoy's JSON form."""
    from xds_client.resources.route import RouteConfigType

    return RouteConfigType().decode(b.pack(b.virtual_hosts(ROUTE_NAME, vhosts, **config)))[1]


def table(*routes: dict[str, Any], **vhost: Any) -> Any:
    """A compiled RouteTable with one ``*`` virtual host holding ``routes``."""
    from meshlib.routing import RouteTable

    return RouteTable(decoded([{"name": "vh", "domains": ["*"], "routes": list(routes), **vhost}]))
