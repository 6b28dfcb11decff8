"""Builders of valid xDS resources (packed in ``Any``) for tests, examples and the
scripted server: the shapes istiod's proxyless generator sends, with few knobs.

Each returns a protobuf message; ``pack`` wraps one in an ``Any``. Tests start from a
valid resource and break one field to exercise a validation path.
"""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

__all__ = [
    "api_listener",
    "cluster",
    "endpoints",
    "hcm",
    "pack",
    "route_config",
    "secret",
    "server_listener",
]


def pack(message: Message) -> any_pb2.Any:
    """``message`` in an ``Any`` with the standard type URL."""
    out = any_pb2.Any()
    out.Pack(message)
    return out


def hcm(route: str = "", *, fault: bool = False) -> hcm_pb2.HttpConnectionManager:
    """An HttpConnectionManager over ADS RDS ``route`` (or an inline route to cluster
    ``inline-cluster`` when ``route`` is empty), with fault (optional) and router."""
    h = hcm_pb2.HttpConnectionManager()
    if route:
        h.rds.config_source.ads.SetInParent()
        h.rds.route_config_name = route
    else:
        h.route_config.CopyFrom(route_config("inline", "inline-cluster"))
    if fault:
        h.http_filters.add(name="envoy.filters.http.fault").typed_config.Pack(fault_pb2.HTTPFault())
    h.http_filters.add(name="envoy.filters.http.router").typed_config.Pack(router_pb2.Router())
    return h


def api_listener(name: str, route: str, *, fault: bool = True) -> listener_pb2.Listener:
    """A client listener as istiod sends it: RDS over ADS, fault then router."""
    listener = listener_pb2.Listener(name=name)
    listener.api_listener.api_listener.Pack(hcm(route, fault=fault))
    return listener


def server_listener(name: str, address: str = "0.0.0.0", port: int = 8080) -> listener_pb2.Listener:
    """An inbound listener with one plaintext filter chain and an inline route."""
    listener = listener_pb2.Listener(name=name)
    sa = listener.address.socket_address
    sa.address, sa.port_value = address, port
    chain = listener.filter_chains.add(name="inbound-plaintext")
    chain.filters.add(name="envoy.filters.network.http_connection_manager").typed_config.Pack(hcm())
    return listener


def route_config(name: str, cluster_name: str, domains: Iterable[str] = ("*",)) -> Message:
    """One virtual host sending every path to ``cluster_name``."""
    rc = route_pb2.RouteConfiguration(name=name)
    vh = rc.virtual_hosts.add(name=name, domains=list(domains))
    r = vh.routes.add()
    r.match.prefix = "/"
    r.route.cluster = cluster_name
    return rc


def cluster(name: str, service_name: str = "") -> cluster_pb2.Cluster:
    """An EDS cluster over ADS with round robin."""
    c = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
    c.eds_cluster_config.eds_config.ads.SetInParent()
    c.eds_cluster_config.service_name = service_name or name
    c.connect_timeout.seconds = 1
    return c


def endpoints(
    name: str, addresses: Iterable[tuple[str, int]], zone: str = "z1"
) -> endpoint_pb2.ClusterLoadAssignment:
    """One weighted locality holding ``addresses`` (host, port), each weight 1."""
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    group = cla.endpoints.add()
    group.locality.zone = zone
    group.load_balancing_weight.value = 1
    for host, port in addresses:
        lb = group.lb_endpoints.add()
        lb.endpoint.address.socket_address.address = host
        lb.endpoint.address.socket_address.port_value = port
        lb.load_balancing_weight.value = 1
    return cla


def secret(name: str, cert: bytes = b"CERT", key: bytes = b"KEY") -> secret_pb2.Secret:
    """A TLS certificate secret with inline bytes."""
    s = secret_pb2.Secret(name=name)
    s.tls_certificate.certificate_chain.inline_bytes = cert
    s.tls_certificate.private_key.inline_bytes = key
    return s
