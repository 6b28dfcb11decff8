"""``/config_dump`` in Envoy's JSON shape, built from the xDS client's CSDS dump.

Every resource the client holds becomes a dynamic entry of the matching
``envoy.admin.v3.*ConfigDump`` (listeners, route configs, clusters, endpoints) with its
version, last update, client status and, when NACKed, its error state. Without a dump
(an xDS client that has no ``dump()``) the entries come from the mesh's Snapshot, names
and errors only.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Any

from envoy.admin.v3 import config_dump_shared_pb2 as shared
from google.protobuf import any_pb2, json_format

__all__ = ["TYPES", "client_dump", "config_dump", "xds_client_of"]

_PREFIX = "type.googleapis.com/envoy.config."
LISTENER = _PREFIX + "listener.v3.Listener"
ROUTE = _PREFIX + "route.v3.RouteConfiguration"
CLUSTER = _PREFIX + "cluster.v3.Cluster"
ENDPOINTS = _PREFIX + "endpoint.v3.ClusterLoadAssignment"
_DUMP = "type.googleapis.com/envoy.admin.v3."
#: ``--type`` names to the config dump each fills.
TYPES = {
    "listeners": _DUMP + "ListenersConfigDump",
    "routes": _DUMP + "RoutesConfigDump",
    "clusters": _DUMP + "ClustersConfigDump",
    "endpoints": _DUMP + "EndpointsConfigDump",
}
# Typed configs the proxyless generator and the embedded control plane put in resources:
# their descriptors must be loaded for JSON rendering of the nested Any fields.
_TYPED_CONFIG_MODULES = (
    "envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2",
    "envoy.extensions.filters.http.router.v3.router_pb2",
    "envoy.extensions.filters.http.fault.v3.fault_pb2",
    "envoy.extensions.filters.http.rbac.v3.rbac_pb2",
    "envoy.extensions.transport_sockets.tls.v3.tls_pb2",
    "envoy.extensions.load_balancing_policies.wrr_locality.v3.wrr_locality_pb2",
    "envoy.extensions.load_balancing_policies.round_robin.v3.round_robin_pb2",
    "envoy.extensions.load_balancing_policies.ring_hash.v3.ring_hash_pb2",
    "envoy.extensions.load_balancing_policies.least_request.v3.least_request_pb2",
    "envoy.extensions.load_balancing_policies.maglev.v3.maglev_pb2",
    "envoy.extensions.load_balancing_policies.client_side_weighted_round_robin.v3.client_side_weighted_round_robin_pb2",
    "envoy.extensions.upstreams.http.v3.http_protocol_options_pb2",
)
_loaded = False


def _load_descriptors() -> None:
    global _loaded
    if _loaded:
        return
    for name in _TYPED_CONFIG_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    _loaded = True


def xds_client_of(mesh: Any) -> Any:
    """The mesh's XdsClient (public ``xds_client`` when it has one, else ``_client``)."""
    return getattr(mesh, "xds_client", None) or getattr(mesh, "_client", None)


def client_dump(mesh: Any) -> Any:
    """The client's ``envoy.service.status.v3.ClientConfig``, or None without ``dump()``."""
    dump = getattr(xds_client_of(mesh), "dump", None)
    return dump() if callable(dump) else None


def _status(config: Any) -> str:
    return str(shared.ClientResourceStatus.Name(config.client_status))


def _error_state(config: Any) -> shared.UpdateFailureState | None:
    if not config.HasField("error_state"):
        return None
    err = config.error_state
    state = shared.UpdateFailureState(details=err.details, version_info=err.version_info)
    state.last_update_attempt.CopyFrom(err.last_update_attempt)
    return state


def _fill(entry: Any, config: Any, field: str) -> None:
    """Common fields of a dynamic entry; ``field`` is where the resource goes."""
    entry.client_status = config.client_status
    if config.HasField("xds_config"):
        getattr(entry, field).CopyFrom(config.xds_config)
        entry.last_updated.CopyFrom(config.last_updated)
    error = _error_state(config)
    if error is not None:
        entry.error_state.CopyFrom(error)


def _from_dump(client_config: Any) -> list[Any]:
    listeners = shared.ListenersConfigDump()
    routes = shared.RoutesConfigDump()
    clusters = shared.ClustersConfigDump()
    endpoints = shared.EndpointsConfigDump()
    for c in client_config.generic_xds_configs:
        if c.type_url == LISTENER:
            dl = listeners.dynamic_listeners.add(name=c.name, client_status=c.client_status)
            if c.HasField("xds_config"):
                dl.active_state.version_info = c.version_info
                dl.active_state.listener.CopyFrom(c.xds_config)
                dl.active_state.last_updated.CopyFrom(c.last_updated)
                listeners.version_info = c.version_info
            error = _error_state(c)
            if error is not None:
                dl.error_state.CopyFrom(error)
        elif c.type_url == ROUTE:
            rc = routes.dynamic_route_configs.add(version_info=c.version_info)
            _fill(rc, c, "route_config")
        elif c.type_url == CLUSTER:
            dc = clusters.dynamic_active_clusters.add(version_info=c.version_info)
            _fill(dc, c, "cluster")
            clusters.version_info = c.version_info or clusters.version_info
        elif c.type_url == ENDPOINTS:
            de = endpoints.dynamic_endpoint_configs.add(version_info=c.version_info)
            _fill(de, c, "endpoint_config")
    return [listeners, routes, clusters, endpoints]


def _from_snapshot(snapshot: Any) -> list[Any]:
    listeners = shared.ListenersConfigDump()
    for name, view in sorted(snapshot.listeners.items()):
        dl = listeners.dynamic_listeners.add(name=name)
        if view.error:
            dl.error_state.details = view.error
            dl.client_status = shared.DOES_NOT_EXIST if view.missing else shared.NACKED
        else:
            dl.client_status = shared.ACKED
    clusters = shared.ClustersConfigDump()
    for name, cview in sorted(snapshot.clusters.items()):
        dc = clusters.dynamic_active_clusters.add()
        dc.cluster.Pack(_named_cluster(name))
        dc.client_status = shared.NACKED if cview.error else shared.ACKED
        if cview.error:
            dc.error_state.details = cview.error
    return [listeners, shared.RoutesConfigDump(), clusters, shared.EndpointsConfigDump()]


def _named_cluster(name: str) -> Any:
    from envoy.config.cluster.v3 import cluster_pb2

    return cluster_pb2.Cluster(name=name)


def _to_json(message: Any) -> dict[str, Any]:
    packed = any_pb2.Any()
    packed.Pack(message)
    try:
        return dict(json_format.MessageToDict(packed, preserving_proto_field_name=True))
    except (TypeError, KeyError) as exc:  # a typed config whose descriptor is not loaded
        return {"@type": packed.type_url, "error": f"cannot render as JSON: {exc}"}


def config_dump(mesh: Any, types: set[str] | None = None) -> dict[str, Any]:
    """``{"configs": [...]}`` as Envoy's admin ``/config_dump`` returns it; ``types``
    (``listeners``, ``routes``, ``clusters``, ``endpoints``) limits the sections."""
    _load_descriptors()
    dump = client_dump(mesh)
    sections = _from_dump(dump) if dump is not None else _from_snapshot(mesh.snapshot)
    wanted = None if not types else {TYPES[t] for t in types}
    configs = [_to_json(s) for s in sections]
    return {"configs": [c for c in configs if wanted is None or c["@type"] in wanted]}


def resource_status(dump: Any) -> list[dict[str, Any]]:
    """One row per resource of a CSDS ClientConfig: type, name, version, status, error."""
    rows = []
    for c in dump.generic_xds_configs:
        rows.append(
            {
                "type": c.type_url.rpartition(".")[2],
                "type_url": c.type_url,
                "name": c.name,
                "version": c.version_info,
                "status": _status(c),
                "error": c.error_state.details if c.HasField("error_state") else "",
                "last_updated": (
                    c.last_updated.ToJsonString() if c.HasField("last_updated") else ""
                ),
            }
        )
    return rows
