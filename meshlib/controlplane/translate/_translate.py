"""Kubernetes and Istio objects -> xDS resources, named as istiod's proxyless generator does.

For every port of every Service (FQDN ``<name>.<ns>.svc.cluster.local``) and every
ServiceEntry host:

* Listeners ``<fqdn>:<port>``, ``<name>.<ns>.svc:<port>``, ``<name>.<ns>:<port>``, and
  ``<name>:<port>`` for nodes in the Service's namespace: API listeners whose
  HttpConnectionManager fetches route configuration ``outbound|<port>||<fqdn>`` over ADS
  and runs the fault filter, then the router.
* RouteConfiguration ``outbound|<port>||<fqdn>``: one virtual host (every alias with and
  without the port), routes from the VirtualServices for the host, or one ``/`` route.
* Clusters ``outbound|<port>|<subset>|<fqdn>`` (no subset and each DestinationRule
  subset), with their ClusterLoadAssignments.
* Server listeners ``xds.istio.io/grpc/lds/inbound/<ip>:<port>`` for every endpoint.

That is the proxyless view; :func:`translate` also returns a renderer for the other
views (grpcio, Sidecar-scoped, locality-aware, Envoy), see :mod:`._render`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2

from ..objects._kubernetes import MeshObjects
from ..xds._cache import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, Resources
from ._clusters import ads_source, build_cluster, build_load_assignment
from ._inbound import inbound_listeners
from ._registry import MeshService, Registry
from ._render import Renderer
from ._routes import ROUTER_FILTER, http_filters, routes_for, vhost_domains
from ._rules import RuleIndex, cluster_name

__all__ = [
    "ROUTER_FILTER",
    "build_listener",
    "build_route_configuration",
    "cluster_name",
    "http_filters",
    "listener_names",
    "translate",
    "vhost_domains",
]

log = logging.getLogger(__name__)


def _pack(msg: object) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(msg, deterministic=True)
    return out


def listener_names(service: MeshService, port: int) -> tuple[list[str], list[str]]:
    """(names valid from any namespace, names valid only inside the service's namespace)."""
    aliases = service.aliases()
    if service.short_name is None:
        return [f"{a}:{port}" for a in aliases], []
    return [f"{a}:{port}" for a in aliases[:-1]], [f"{aliases[-1]}:{port}"]


def build_listener(name: str, route_config_name: str) -> listener_pb2.Listener:
    """An API listener whose HttpConnectionManager fetches ``route_config_name`` by RDS."""
    hcm = hcm_pb2.HttpConnectionManager(
        rds=hcm_pb2.Rds(config_source=ads_source(), route_config_name=route_config_name),
        http_filters=http_filters(),
    )
    return listener_pb2.Listener(
        name=name, api_listener=api_listener_pb2.ApiListener(api_listener=_pack(hcm))
    )


def build_route_configuration(
    name: str, vhost_name: str, domains: list[str], routes: list[route_components_pb2.Route]
) -> route_pb2.RouteConfiguration:
    """One virtual host holding ``routes``."""
    vhost = route_components_pb2.VirtualHost(name=vhost_name, domains=domains, routes=routes)
    return route_pb2.RouteConfiguration(name=name, virtual_hosts=[vhost])


def translate(objects: MeshObjects, *, ca: Any = None) -> Resources:
    """Every resource of the proxyless view, plus a renderer for every other view.

    ``ca`` (a :class:`~meshlib.controlplane.ca._authority.CertificateAuthority`) enables SDS
    secrets for Envoy nodes. Problems found while resolving VirtualService and
    DestinationRule hosts and subsets are in ``Resources.problems``.
    """
    registry = Registry(objects)
    index = RuleIndex(registry)
    tables: dict[str, dict[str, Any]] = {t: {} for t in (LISTENER_TYPE, ROUTE_TYPE)}
    tables[CLUSTER_TYPE], tables[ENDPOINT_TYPE] = {}, {}
    short: dict[str, dict[str, Any]] = defaultdict(dict)
    owners: dict[str, str] = {}  # resource name -> service hostname (for Sidecar scoping)
    for svc in registry.services.values():
        for port_info in svc.ports:
            port = port_info.number
            name = cluster_name(port, svc.hostname)
            qualified, local = listener_names(svc, port)
            for lname in qualified:
                tables[LISTENER_TYPE][lname] = build_listener(lname, name)
                owners[lname] = svc.hostname
            for lname in local:
                short[svc.namespace][lname] = build_listener(lname, name)
                owners[lname] = svc.hostname
            tables[ROUTE_TYPE][name] = build_route_configuration(
                name,
                f"{svc.hostname}:{port}",
                vhost_domains(svc, port),
                routes_for(index, svc, port),
            )
            owners[name] = svc.hostname
    for svc, port, subset in index.clusters():
        name = cluster_name(port, svc.hostname, subset.name if subset else "")
        tables[CLUSTER_TYPE][name] = build_cluster(index, svc, port, subset, envoy=False)
        tables[ENDPOINT_TYPE][name] = build_load_assignment(
            index, svc, port, subset, resolve_dns=True
        )
        owners[name] = svc.hostname
    tables[LISTENER_TYPE].update(inbound_listeners(registry))
    renderer = Renderer(index, tables, dict(short), owners, ca)
    return Resources(
        shared=tables,
        by_namespace={ns: {LISTENER_TYPE: named} for ns, named in short.items()},
        render=renderer.render,
        inputs=objects,
        problems=tuple(index.problems),
    )
