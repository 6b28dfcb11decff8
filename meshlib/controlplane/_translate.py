"""Kubernetes objects -> xDS resources, named as istiod's proxyless-gRPC generator does.

For every TCP port of every Service (FQDN ``<name>.<ns>.svc.cluster.local``):

* Listeners ``<fqdn>:<port>``, ``<name>.<ns>.svc:<port>``, ``<name>.<ns>:<port>``, and
  ``<name>:<port>`` for nodes in the Service's namespace: API listeners whose
  HttpConnectionManager fetches route configuration ``outbound|<port>||<fqdn>`` over ADS.
* RouteConfiguration ``outbound|<port>||<fqdn>``: one virtual host, every alias with and
  without the port, one ``prefix: "/"`` route to the cluster of the same name.
* Cluster ``outbound|<port>||<fqdn>``: EDS over ADS, round robin.
* ClusterLoadAssignment for that cluster, from every EndpointSlice of the Service.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2

from ._cache import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, Resources
from ._objects import EndpointSlice, MeshObjects, Service, ServicePort

__all__ = [
    "ROUTER_FILTER",
    "build_cluster",
    "build_listener",
    "build_load_assignment",
    "build_route_configuration",
    "cluster_name",
    "listener_names",
    "translate",
    "vhost_domains",
]

log = logging.getLogger(__name__)

ROUTER_FILTER = "envoy.filters.http.router"
_CONNECT_TIMEOUT = duration_pb2.Duration(seconds=10)


def cluster_name(port: int, fqdn: str, subset: str = "") -> str:
    """istiod's ``outbound|<port>|<subset>|<fqdn>``; also the route configuration name."""
    return f"outbound|{port}|{subset}|{fqdn}"


def listener_names(service: Service, port: int) -> tuple[list[str], list[str]]:
    """(names valid from any namespace, names valid only inside the Service's namespace)."""
    ns_qualified = [
        f"{service.fqdn}:{port}",
        f"{service.name}.{service.namespace}.svc:{port}",
        f"{service.name}.{service.namespace}:{port}",
    ]
    return ns_qualified, [f"{service.name}:{port}"]


def vhost_domains(service: Service, port: int) -> list[str]:
    """Every host a client may dial for this port, with and without ``:<port>``."""
    hosts = [
        service.fqdn,
        f"{service.name}.{service.namespace}.svc",
        f"{service.name}.{service.namespace}",
        service.name,
    ]
    if service.cluster_ip and service.cluster_ip != "None":
        ip = service.cluster_ip
        hosts.append(f"[{ip}]" if ":" in ip else ip)
    out: list[str] = []
    for host in hosts:
        out += [host, f"{host}:{port}"]
    return out


def _ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )


def _pack(msg: object) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(msg, deterministic=True)
    return out


def build_listener(name: str, route_config_name: str) -> listener_pb2.Listener:
    """An API listener whose HttpConnectionManager fetches ``route_config_name`` by RDS."""
    hcm = hcm_pb2.HttpConnectionManager(
        rds=hcm_pb2.Rds(config_source=_ads(), route_config_name=route_config_name),
        http_filters=[
            hcm_pb2.HttpFilter(name=ROUTER_FILTER, typed_config=_pack(router_pb2.Router())),
        ],
    )
    return listener_pb2.Listener(
        name=name, api_listener=api_listener_pb2.ApiListener(api_listener=_pack(hcm))
    )


def build_route_configuration(
    name: str, vhost_name: str, domains: list[str], cluster: str
) -> route_pb2.RouteConfiguration:
    """One virtual host, one catch-all route to ``cluster``."""
    route = route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(prefix="/"),
        route=route_components_pb2.RouteAction(cluster=cluster),
    )
    vhost = route_components_pb2.VirtualHost(name=vhost_name, domains=domains, routes=[route])
    return route_pb2.RouteConfiguration(name=name, virtual_hosts=[vhost])


def build_cluster(name: str) -> cluster_pb2.Cluster:
    """An EDS cluster (endpoints over ADS, service_name = cluster name), round robin."""
    return cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
            eds_config=_ads(), service_name=name
        ),
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
        connect_timeout=_CONNECT_TIMEOUT,
    )


def _slice_port(svc_port: ServicePort, n_service_ports: int, eps: EndpointSlice) -> int | None:
    for p in eps.ports:
        if p.name == svc_port.name and p.port is not None:
            return p.port
    if not svc_port.name:
        if len(eps.ports) == 1 and n_service_ports == 1 and eps.ports[0].port is not None:
            return eps.ports[0].port
        if isinstance(svc_port.target_port, int):
            return svc_port.target_port
        if svc_port.target_port is None and not eps.ports:
            return svc_port.port
    return None


def build_load_assignment(
    name: str, service: Service, svc_port: ServicePort, slices: Iterable[EndpointSlice]
) -> endpoint_pb2.ClusterLoadAssignment:
    """Merge the Service's EndpointSlices into one locality per zone.

    Ready endpoints are HEALTHY; terminating ones still serving are DRAINING; the rest
    are left out. A locality's weight is its number of endpoints, so traffic spreads
    evenly per endpoint across zones.
    """
    by_zone: dict[str, list[endpoint_components_pb2.LbEndpoint]] = defaultdict(list)
    seen: set[tuple[str, int]] = set()
    for eps in slices:
        if eps.address_type == "FQDN":
            log.debug("%s: skipping FQDN EndpointSlice %s", name, eps.name)
            continue
        port = _slice_port(svc_port, len(service.ports), eps)
        if port is None:
            log.debug("%s: EndpointSlice %s has no port %r", name, eps.name, svc_port.name)
            continue
        for ep in eps.endpoints:
            cond = ep.conditions
            if cond.is_ready:
                status = health_check_pb2.HEALTHY
            elif cond.terminating and cond.serving is not False:
                status = health_check_pb2.DRAINING
            else:
                continue
            for address in ep.addresses:
                if (address, port) in seen:
                    continue
                seen.add((address, port))
                by_zone[ep.zone or ""].append(
                    endpoint_components_pb2.LbEndpoint(
                        endpoint=endpoint_components_pb2.Endpoint(
                            address=address_pb2.Address(
                                socket_address=address_pb2.SocketAddress(
                                    address=address, port_value=port
                                )
                            )
                        ),
                        health_status=status,
                        load_balancing_weight=wrappers_pb2.UInt32Value(value=1),
                    )
                )
    localities = [
        endpoint_components_pb2.LocalityLbEndpoints(
            locality=base_pb2.Locality(region="", zone=zone),
            lb_endpoints=endpoints,
            load_balancing_weight=wrappers_pb2.UInt32Value(value=len(endpoints)),
        )
        for zone, endpoints in sorted(by_zone.items())
    ]
    return endpoint_pb2.ClusterLoadAssignment(cluster_name=name, endpoints=localities)


def translate(objects: MeshObjects) -> Resources:
    """Every Listener, RouteConfiguration, Cluster and ClusterLoadAssignment."""
    listeners: dict[str, listener_pb2.Listener] = {}
    routes: dict[str, route_pb2.RouteConfiguration] = {}
    clusters: dict[str, cluster_pb2.Cluster] = {}
    assignments: dict[str, endpoint_pb2.ClusterLoadAssignment] = {}
    short: dict[str, dict[str, listener_pb2.Listener]] = defaultdict(dict)
    for service in objects.services:
        slices = objects.slices_for(service)
        for svc_port in service.ports:
            if svc_port.protocol != "TCP":
                log.debug("%s: skipping %s port %d", service.fqdn, svc_port.protocol, svc_port.port)
                continue
            port = svc_port.port
            name = cluster_name(port, service.fqdn)
            qualified, local = listener_names(service, port)
            for lname in qualified:
                listeners[lname] = build_listener(lname, name)
            for lname in local:
                short[service.namespace][lname] = build_listener(lname, name)
            routes[name] = build_route_configuration(
                name, f"{service.fqdn}:{port}", vhost_domains(service, port), name
            )
            clusters[name] = build_cluster(name)
            assignments[name] = build_load_assignment(name, service, svc_port, slices)
    return Resources(
        shared={
            LISTENER_TYPE: listeners,
            ROUTE_TYPE: routes,
            CLUSTER_TYPE: clusters,
            ENDPOINT_TYPE: assignments,
        },
        by_namespace={ns: {LISTENER_TYPE: named} for ns, named in short.items()},
    )
