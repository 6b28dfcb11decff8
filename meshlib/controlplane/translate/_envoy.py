"""The Envoy view: socket listeners, port-keyed routes, Envoy clusters, SDS secrets.

As istiod does for sidecars, an Envoy node gets one outbound listener per service
port, whose route configuration (named by the port, e.g. ``"9080"``) holds a virtual
host for every service on that port; requests pick the service by ``Host``. On a
laptop the listeners cannot bind the service ports themselves, so node metadata
``MESHLIB_LISTENER_PORTS`` maps each service port to the local port its listener
binds (on ``MESHLIB_LISTENER_ADDRESS``, default 127.0.0.1); ports without a mapping
get no listener. Clusters are the proxyless ones, except that ISTIO_MUTUAL reads SDS
secrets ``default`` and ``ROOTCA`` (served over ADS when the control plane has a CA),
gRPC ports speak HTTP/2 upstream and DNS ServiceEntries become STRICT_DNS clusters.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2

from ..xds._cache import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE
from ..xds._views import NodeView
from ._clusters import ads_source, build_cluster, build_load_assignment
from ._registry import MeshService, spiffe_id
from ._routes import http_filters, route_clusters, routes_for, vhost_domains
from ._rules import RuleIndex, cluster_name
from ._tls import SECRET_TYPE, secrets_for

__all__ = ["HCM_FILTER", "SecretStore", "envoy_tables"]

HCM_FILTER = "envoy.filters.network.http_connection_manager"
_CERT_TTL = 24 * 3600.0


def _pack(msg: object) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(msg, deterministic=True)
    return out


class SecretStore:
    """Workload certificates per identity, issued by ``ca`` and reissued at half-life."""

    def __init__(self, ca: Any, ttl: float = _CERT_TTL) -> None:
        self.ca = ca
        self.ttl = ttl
        self._lock = threading.Lock()
        self._issued: dict[str, tuple[float, dict[str, Any]]] = {}

    def secrets(self, identity: str) -> dict[str, Any]:
        """SDS secrets ``default`` and ``ROOTCA`` for ``identity``."""
        now = time.monotonic()
        with self._lock:
            found = self._issued.get(identity)
            if found is None or now - found[0] > self.ttl / 2:
                found = (now, secrets_for(self.ca, identity, self.ttl))
                self._issued[identity] = found
            return found[1]


def _outbound_listener(view: NodeView, service_port: int, local: int) -> listener_pb2.Listener:
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=f"outbound_{service_port}",
        rds=hcm_pb2.Rds(config_source=ads_source(), route_config_name=str(service_port)),
        http_filters=http_filters(),
    )
    return listener_pb2.Listener(
        name=f"{view.listener_address}_{local}",
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(
                address=view.listener_address, port_value=local
            )
        ),
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[listener_components_pb2.Filter(name=HCM_FILTER, typed_config=_pack(hcm))]
            )
        ],
        traffic_direction=1,  # OUTBOUND
    )


def _port_routes(
    index: RuleIndex, port: int, services: list[MeshService]
) -> route_pb2.RouteConfiguration:
    out = route_pb2.RouteConfiguration(name=str(port))
    seen: set[str] = set()
    for svc in services:
        domains = [d for d in vhost_domains(svc, port) if d not in seen]
        seen.update(domains)
        if not domains:
            continue
        out.virtual_hosts.append(
            route_components_pb2.VirtualHost(
                name=f"{svc.hostname}:{port}", domains=domains, routes=routes_for(index, svc, port)
            )
        )
    return out


def envoy_tables(
    index: RuleIndex,
    view: NodeView,
    secrets: SecretStore | None,
    visible: Callable[[MeshService], bool] | None = None,
) -> dict[str, dict[str, Any]]:
    """Every resource an Envoy node with ``view`` is served."""
    services = list(index.registry.services.values())
    shown = [s for s in services if visible is None or visible(s)]
    listeners: dict[str, Any] = {}
    routes: dict[str, Any] = {}
    for service_port, local in view.listener_ports:
        on_port = [s for s in shown if s.port(service_port) is not None]
        listener = _outbound_listener(view, service_port, local)
        listeners[listener.name] = listener
        routes[str(service_port)] = _port_routes(index, service_port, on_port)
    needed: set[str] = set()
    for rc in routes.values():
        needed |= route_clusters(rc)
    clusters: dict[str, Any] = {}
    assignments: dict[str, Any] = {}
    shown_hosts = {s.hostname for s in shown}
    for svc, port, subset in index.clusters():
        name = cluster_name(port, svc.hostname, subset.name if subset else "")
        if svc.hostname not in shown_hosts and name not in needed:
            continue
        cluster = build_cluster(index, svc, port, subset, envoy=True)
        clusters[name] = cluster
        if cluster.HasField("eds_cluster_config"):
            assignments[name] = build_load_assignment(index, svc, port, subset)
    out: dict[str, dict[str, Any]] = {
        LISTENER_TYPE: listeners,
        ROUTE_TYPE: routes,
        CLUSTER_TYPE: clusters,
        ENDPOINT_TYPE: assignments,
    }
    if secrets is not None:
        out[SECRET_TYPE] = secrets.secrets(spiffe_id(view.namespace, view.service_account))
    return out
