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
from pathlib import Path
from typing import Any

from envoy.admin.v3 import config_dump_shared_pb2 as shared
from google.protobuf import any_pb2, descriptor_pool, json_format, message_factory

__all__ = [
    "TYPES",
    "DumpQueryError",
    "client_dump",
    "config_dump",
    "render_errors",
    "to_json",
    "xds_client_of",
]

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
_MISSING = "Can not find message descriptor by type_url: type.googleapis.com/"
_imported: set[str] = set()


def _import_package_of(type_name: str) -> bool:
    """Import every ``*_pb2`` module of the xds-protos package that defines
    ``type_name`` (e.g. ``envoy.extensions.retry.host.previous_hosts.v3``), so the
    default descriptor pool knows it; False when no such package exists."""
    parts = type_name.split(".")
    for cut in range(len(parts) - 1, 0, -1):  # nested messages: try shorter prefixes
        package = ".".join(parts[:cut])
        if package in _imported:
            return False
        try:
            module = importlib.import_module(package)
        except ImportError:
            continue
        _imported.add(package)
        for path in getattr(module, "__path__", []):
            for entry in sorted(Path(path).glob("*_pb2.py")):
                with contextlib.suppress(ImportError):
                    importlib.import_module(f"{package}.{entry.stem}")
        return True
    return False


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


def to_json(message: Any) -> dict[str, Any]:
    """``message`` as an Any in JSON, every nested typed config rendered: the packages
    of types the descriptor pool lacks are imported on first sight. A type no installed
    package defines gives ``{"@type": ..., "error": ...}`` (see ``render_errors``)."""
    packed = any_pb2.Any()
    packed.Pack(message)
    for _ in range(64):  # each round imports one more package; bounded
        try:
            return dict(json_format.MessageToDict(packed, preserving_proto_field_name=True))
        except (TypeError, KeyError) as exc:
            text = str(exc)
            missing = text.partition(_MISSING)[2].strip()
            if not missing or not _import_package_of(missing):
                return {"@type": packed.type_url, "error": f"cannot render as JSON: {text}"}
    return {"@type": packed.type_url, "error": "cannot render as JSON: too many nested types"}


class DumpQueryError(ValueError):
    """A ``?resource=`` or ``?mask=`` Envoy would refuse: ``status`` is its HTTP code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _mask(message: Any, paths: list[str]) -> Any:
    """A copy of ``message`` with only the fields ``paths`` name (FieldMask paths, going
    into ``Any`` fields as Envoy's admin does: ``cluster.name``)."""
    groups: dict[str, list[str]] = {}
    for path in paths:
        head, _, rest = path.partition(".")
        groups.setdefault(head, []).append(rest)
    if message.DESCRIPTOR.full_name == "google.protobuf.Any":
        inner = _unpack(message)
        packed = any_pb2.Any()
        packed.Pack(_mask(inner, paths))
        return packed
    out = type(message)()
    for name, rests in groups.items():
        fd = message.DESCRIPTOR.fields_by_name.get(name)
        if fd is None:
            raise DumpQueryError(400, f"mask: {message.DESCRIPTOR.full_name} has no field {name!r}")
        repeated = _repeated(fd)
        if "" in rests or fd.message_type is None or fd.message_type.GetOptions().map_entry:
            if repeated:
                getattr(out, name).extend(getattr(message, name))
            elif fd.message_type is None:
                setattr(out, name, getattr(message, name))
            elif message.HasField(name):
                getattr(out, name).CopyFrom(getattr(message, name))
            continue
        if repeated:
            for element in getattr(message, name):
                getattr(out, name).add().CopyFrom(_mask(element, rests))
        elif message.HasField(name):
            getattr(out, name).CopyFrom(_mask(getattr(message, name), rests))
    return out


def _repeated(fd: Any) -> bool:
    is_repeated = getattr(fd, "is_repeated", None)  # protobuf >= 5.28; ``label`` before
    return bool(is_repeated) if is_repeated is not None else fd.label == fd.LABEL_REPEATED


def _unpack(packed: Any) -> Any:
    type_name = packed.type_url.rpartition("/")[2]
    pool = descriptor_pool.Default()
    for _ in range(2):
        try:
            cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(type_name))
            break
        except KeyError:
            if not _import_package_of(type_name):
                raise DumpQueryError(400, f"mask: cannot look into {type_name}") from None
    else:
        raise DumpQueryError(400, f"mask: cannot look into {type_name}")
    inner = cls()
    packed.Unpack(inner)
    return inner


def config_dump(
    mesh: Any,
    types: set[str] | None = None,
    *,
    resource: str = "",
    mask: str = "",
) -> dict[str, Any]:
    """``{"configs": [...]}`` as Envoy's admin ``/config_dump`` returns it; ``types``
    (``listeners``, ``routes``, ``clusters``, ``endpoints``) limits the sections.

    As in Envoy: ``resource`` names a repeated field of one of the sections
    (``dynamic_active_clusters``, ``dynamic_listeners``...) and the dump is its
    elements (404 when no section has it, 400 when it is not repeated); ``mask``
    (comma-separated field paths) is applied to each section, or with ``resource`` to
    each element (400 when a path does not exist)."""
    dump = client_dump(mesh)
    sections = _from_dump(dump) if dump is not None else _from_snapshot(mesh.snapshot)
    wanted = None if not types else {TYPES[t] for t in types}
    sections = [s for s in sections if wanted is None or _DUMP + s.DESCRIPTOR.name in wanted]
    paths = [p for p in mask.split(",") if p] if mask else []
    if not resource:
        if not paths:
            return {"configs": [to_json(s) for s in sections]}
        # each section keeps the paths it has; a path no section has is an error
        masked = []
        for s in sections:
            fields = s.DESCRIPTOR.fields_by_name
            masked.append(_mask(s, [p for p in paths if p.partition(".")[0] in fields]))
        known = {f for s in sections for f in s.DESCRIPTOR.fields_by_name}
        unknown = [p for p in paths if p.partition(".")[0] not in known]
        if unknown:
            raise DumpQueryError(400, f"mask: no config dump has field {unknown[0]!r}")
        return {"configs": [to_json(m) for m in masked]}
    found = False
    configs = []
    for section in sections:
        fd = section.DESCRIPTOR.fields_by_name.get(resource)
        if fd is None:
            continue
        if not _repeated(fd) or fd.message_type is None:
            raise DumpQueryError(
                400, f"resource {resource!r} is not a repeated field; use ?mask= for it"
            )
        found = True
        for element in getattr(section, resource):
            configs.append(to_json(_mask(element, paths) if paths else element))
    if not found:
        raise DumpQueryError(404, f"resource {resource!r}: no config dump has such a field")
    return {"configs": configs}


def render_errors(doc: Any) -> list[str]:
    """The ``error`` strings of entries ``to_json`` could not render, anywhere in ``doc``."""
    out: list[str] = []
    if isinstance(doc, dict):
        if "@type" in doc and isinstance(doc.get("error"), str):
            out.append(doc["error"])
        for v in doc.values():
            out += render_errors(v)
    elif isinstance(doc, list):
        for v in doc:
            out += render_errors(v)
    return out


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
