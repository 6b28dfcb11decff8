"""Hand-built xDS resources for routing/retry/fault tests, served by the project's control
plane (its SnapshotCache filled directly) to meshlib and, as socket listeners, to Envoy."""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2, duration_pb2, json_format

from meshlib import Mesh
from meshlib.controlplane import ControlPlane
from meshlib.controlplane._cache import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    Resources,
    VersionedSnapshotCache,
)

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


def packed(msg: Any) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(msg)
    return a


def duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def route_config(
    vhosts: Sequence[dict[str, Any]], name: str = ROUTE_NAME
) -> route_pb2.RouteConfiguration:
    """A RouteConfiguration from Envoy's JSON form of its virtual hosts."""
    return json_format.ParseDict(
        {"name": name, "virtual_hosts": list(vhosts)}, route_pb2.RouteConfiguration()
    )


def cluster(name: str) -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
    c.eds_cluster_config.eds_config.ads.SetInParent()
    c.eds_cluster_config.eds_config.resource_api_version = config_source_pb2.V3
    c.connect_timeout.CopyFrom(duration(1))
    return c


def load_assignment(name: str, ports: Sequence[int]) -> endpoint_pb2.ClusterLoadAssignment:
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    group = cla.endpoints.add()
    group.locality.region = "local"
    group.load_balancing_weight.value = 1
    for port in ports:
        lb = group.lb_endpoints.add()
        sa = lb.endpoint.address.socket_address
        sa.address, sa.port_value = "127.0.0.1", port
        lb.load_balancing_weight.value = 1
    return cla


def _hcm(route_name: str, stat_prefix: str = "") -> hcm_pb2.HttpConnectionManager:
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix=stat_prefix)
    hcm.rds.route_config_name = route_name
    hcm.rds.config_source.ads.SetInParent()
    hcm.rds.config_source.resource_api_version = config_source_pb2.V3
    fault = hcm.http_filters.add(name="envoy.filters.http.fault")
    fault.typed_config.Pack(fault_pb2.HTTPFault())
    router = hcm.http_filters.add(name="envoy.filters.http.router")
    router.typed_config.Pack(router_pb2.Router())
    return hcm


def api_listener(name: str, route_name: str = ROUTE_NAME) -> listener_pb2.Listener:
    """A client API listener, as istiod sends to proxyless clients."""
    lis = listener_pb2.Listener(name=name)
    lis.api_listener.CopyFrom(api_listener_pb2.ApiListener(api_listener=packed(_hcm(route_name))))
    return lis


def socket_listener(name: str, port: int, route_name: str = ROUTE_NAME) -> listener_pb2.Listener:
    """An Envoy listener on 127.0.0.1:port with the same HCM (rds over ads)."""
    lis = listener_pb2.Listener(name=name)
    lis.address.CopyFrom(
        address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=port)
        )
    )
    chain = lis.filter_chains.add()
    chain.filters.add(
        name="envoy.filters.network.http_connection_manager",
        typed_config=packed(_hcm(route_name, "ingress")),
    )
    return lis


def resources(
    listeners: Sequence[listener_pb2.Listener],
    routes: Sequence[route_pb2.RouteConfiguration],
    clusters: dict[str, Sequence[int]],
) -> Resources:
    return Resources(
        shared={
            LISTENER_TYPE: {lis.name: lis for lis in listeners},
            ROUTE_TYPE: {r.name: r for r in routes},
            CLUSTER_TYPE: {name: cluster(name) for name in clusters},
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

    msg = json_format.ParseDict(
        {"name": ROUTE_NAME, "virtual_hosts": list(vhosts), **config},
        route_pb2.RouteConfiguration(),
    )
    return RouteConfigType().decode(packed(msg))[1]


def table(*routes: dict[str, Any], **vhost: Any) -> Any:
    """A compiled RouteTable with one ``*`` virtual host holding ``routes``."""
    from meshlib.routing import RouteTable

    return RouteTable(decoded([{"name": "vh", "domains": ["*"], "routes": list(routes), **vhost}]))
