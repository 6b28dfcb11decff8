"""Builders of valid xDS resources (packed in ``Any``) for tests, examples and the
scripted server: the shapes istiod's proxyless generator sends, with few knobs.

Each returns a protobuf message; ``pack`` wraps one in an ``Any``. Tests start from a
valid resource and break one field to exercise a validation path. Config sources are ADS
with ``resource_api_version: V3``, as istiod sends them. Where a builder takes
``**fields``, those are further fields of the message in Envoy's JSON form (proto field
names), merged over the defaults: ``cluster("c", lb_policy="RING_HASH")``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import config_source_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from google.protobuf import any_pb2, duration_pb2, json_format
from google.protobuf.message import Message

__all__ = [
    "api_listener",
    "cluster",
    "duration",
    "endpoints",
    "hcm",
    "pack",
    "route_config",
    "secret",
    "server_listener",
    "socket_listener",
    "virtual_hosts",
]


def pack(message: Message) -> any_pb2.Any:
    """``message`` in an ``Any`` with the standard type URL."""
    out = any_pb2.Any()
    out.Pack(message)
    return out


def duration(seconds: float) -> duration_pb2.Duration:
    """A ``Duration`` of ``seconds`` (to the nanosecond)."""
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def _ads(source: config_source_pb2.ConfigSource) -> None:
    source.ads.SetInParent()
    source.resource_api_version = config_source_pb2.V3


def hcm(
    route: str = "", *, fault: bool = False, stat_prefix: str = ""
) -> hcm_pb2.HttpConnectionManager:
    """An HttpConnectionManager over ADS RDS ``route`` (or an inline route to cluster
    ``inline-cluster`` when ``route`` is empty), with fault (optional) and router."""
    h = hcm_pb2.HttpConnectionManager(stat_prefix=stat_prefix)
    if route:
        _ads(h.rds.config_source)
        h.rds.route_config_name = route
    else:
        h.route_config.CopyFrom(route_config("inline", "inline-cluster"))
    if fault:
        h.http_filters.add(name="envoy.filters.http.fault").typed_config.Pack(fault_pb2.HTTPFault())
    h.http_filters.add(name="envoy.filters.http.router").typed_config.Pack(router_pb2.Router())
    return h


def api_listener(
    name: str, route: str, *, fault: bool = True, stat_prefix: str = ""
) -> listener_pb2.Listener:
    """A client listener as istiod sends it: RDS over ADS, fault then router."""
    listener = listener_pb2.Listener(name=name)
    listener.api_listener.api_listener.Pack(hcm(route, fault=fault, stat_prefix=stat_prefix))
    return listener


def socket_listener(
    name: str,
    route: str,
    *,
    address: str = "127.0.0.1",
    port: int = 0,
    fault: bool = False,
    stat_prefix: str = "ingress",
) -> listener_pb2.Listener:
    """A listener on ``address:port`` (Envoy's, for a proxy serving the same routes as
    an API listener) with one filter chain: the HCM of :func:`api_listener`."""
    listener = listener_pb2.Listener(name=name)
    sa = listener.address.socket_address
    sa.address, sa.port_value = address, port
    chain = listener.filter_chains.add()
    chain.filters.add(name="envoy.filters.network.http_connection_manager").typed_config.Pack(
        hcm(route, fault=fault, stat_prefix=stat_prefix)
    )
    return listener


def server_listener(name: str, address: str = "0.0.0.0", port: int = 8080) -> listener_pb2.Listener:
    """An inbound listener with one plaintext filter chain and an inline route."""
    listener = listener_pb2.Listener(name=name)
    sa = listener.address.socket_address
    sa.address, sa.port_value = address, port
    chain = listener.filter_chains.add(name="inbound-plaintext")
    chain.filters.add(name="envoy.filters.network.http_connection_manager").typed_config.Pack(hcm())
    return listener


def route_config(
    name: str, cluster_name: str, domains: Iterable[str] = ("*",)
) -> route_pb2.RouteConfiguration:
    """One virtual host sending every path to ``cluster_name``."""
    rc = route_pb2.RouteConfiguration(name=name)
    vh = rc.virtual_hosts.add(name=name, domains=list(domains))
    r = vh.routes.add()
    r.match.prefix = "/"
    r.route.cluster = cluster_name
    return rc


def virtual_hosts(
    name: str, hosts: Sequence[Mapping[str, Any]], **fields: Any
) -> route_pb2.RouteConfiguration:
    """A RouteConfiguration ``name`` of ``hosts``, each a VirtualHost in Envoy's JSON
    form (``{"name": ..., "domains": [...], "routes": [...]}``)."""
    spec = {"name": name, "virtual_hosts": list(hosts), **fields}
    return json_format.ParseDict(spec, route_pb2.RouteConfiguration())


def cluster(name: str, service_name: str = "", **fields: Any) -> cluster_pb2.Cluster:
    """An EDS cluster over ADS with round robin and a 1 s connect timeout; ``fields``
    (Envoy JSON) add to it, e.g. ``outlier_detection={...}``."""
    c = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
    _ads(c.eds_cluster_config.eds_config)
    c.eds_cluster_config.service_name = service_name or name
    c.connect_timeout.seconds = 1
    if fields:
        json_format.ParseDict(fields, c)
    return c


def endpoints(
    name: str,
    addresses: Iterable[tuple[str, int]],
    zone: str = "z1",
    *,
    region: str = "",
    weight: int | None = 1,
    **fields: Any,
) -> endpoint_pb2.ClusterLoadAssignment:
    """One locality (``region``/``zone``) holding ``addresses`` (host, port); the
    locality and each endpoint get ``weight`` (None: left unset, which gRPC reads as a
    locality to ignore); ``fields`` (Envoy JSON) add to it, e.g. ``policy={...}``."""
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    group = cla.endpoints.add()
    group.locality.region = region
    group.locality.zone = zone
    if weight is not None:
        group.load_balancing_weight.value = weight
    for host, port in addresses:
        lb = group.lb_endpoints.add()
        lb.endpoint.address.socket_address.address = host
        lb.endpoint.address.socket_address.port_value = port
        if weight is not None:
            lb.load_balancing_weight.value = weight
    if fields:
        json_format.ParseDict(fields, cla)
    return cla


def secret(name: str, cert: bytes = b"CERT", key: bytes = b"KEY") -> secret_pb2.Secret:
    """A TLS certificate secret with inline bytes."""
    s = secret_pb2.Secret(name=name)
    s.tls_certificate.certificate_chain.inline_bytes = cert
    s.tls_certificate.private_key.inline_bytes = key
    return s
