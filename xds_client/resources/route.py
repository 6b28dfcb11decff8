"""RouteConfiguration resources (RDS): virtual hosts, route matches and actions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from envoy.config.route.v3 import route_components_pb2, route_pb2
from google.protobuf import any_pb2

from ._base import ResourceError, duration_seconds, unpack

__all__ = [
    "ClusterWeight",
    "RouteAction",
    "RouteConfigResource",
    "RouteConfigType",
    "RouteEntry",
    "RouteMatch",
    "VirtualHost",
    "decode_route_config",
]


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """Path part of a route match. ``kind`` is ``prefix``, ``path`` or ``path_separated_prefix``."""

    kind: str
    value: str
    case_sensitive: bool = True


@dataclass(frozen=True, slots=True)
class ClusterWeight:
    name: str
    weight: int


@dataclass(frozen=True, slots=True)
class RouteAction:
    """Where a matched request goes: one cluster or a weighted set."""

    cluster: str | None
    weighted_clusters: tuple[ClusterWeight, ...] = ()
    timeout: float | None = None

    def cluster_names(self) -> tuple[str, ...]:
        if self.cluster is not None:
            return (self.cluster,)
        return tuple(w.name for w in self.weighted_clusters)


@dataclass(frozen=True, slots=True)
class RouteEntry:
    name: str
    match: RouteMatch
    action: RouteAction | None
    """None for a non-forwarding route (redirect, direct response): calls matching it fail."""


@dataclass(frozen=True, slots=True)
class VirtualHost:
    name: str
    domains: tuple[str, ...]
    routes: tuple[RouteEntry, ...]


@dataclass(frozen=True, slots=True)
class RouteConfigResource:
    name: str
    virtual_hosts: tuple[VirtualHost, ...]

    def cluster_names(self) -> frozenset[str]:
        """Every cluster any route of this config can send to."""
        return frozenset(
            c
            for vh in self.virtual_hosts
            for r in vh.routes
            if r.action is not None
            for c in r.action.cluster_names()
        )


class RouteConfigType:
    type_url = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
    type_name = "RouteConfiguration"
    all_resources_required_in_sotw = False

    def decode(self, resource: any_pb2.Any) -> tuple[str, RouteConfigResource]:
        msg = unpack(resource, route_pb2.RouteConfiguration, self.type_name)
        if not msg.name:
            raise ResourceError(self.type_name, "", "name", "must not be empty")
        return msg.name, decode_route_config(msg, self.type_name, msg.name)


def decode_route_config(
    msg: route_pb2.RouteConfiguration, type_name: str, name: str, field_prefix: str = ""
) -> RouteConfigResource:
    """Validate a RouteConfiguration message (from RDS, or inline in a Listener where
    ``type_name``/``name`` name the Listener and ``field_prefix`` the path to it)."""

    def fail(field: str, problem: str) -> ResourceError:
        return ResourceError(type_name, name, field_prefix + field, problem)

    vhosts = []
    for i, vh in enumerate(msg.virtual_hosts):
        vpath = f"virtual_hosts[{i}]"
        if not vh.domains:
            raise fail(f"{vpath}.domains", "must list at least one domain")
        for j, d in enumerate(vh.domains):
            if not d:
                raise fail(f"{vpath}.domains[{j}]", "must not be empty")
            if d != "*" and d.count("*") and not (d.startswith("*") or d.endswith("*")):
                raise fail(f"{vpath}.domains[{j}]", f"wildcard only at start or end: {d!r}")
        routes = tuple(_route(r, f"{vpath}.routes[{k}]", fail) for k, r in enumerate(vh.routes))
        vhosts.append(VirtualHost(vh.name, tuple(vh.domains), routes))
    return RouteConfigResource(msg.name, tuple(vhosts))


def _route(
    r: route_components_pb2.Route, path: str, fail: Callable[[str, str], ResourceError]
) -> RouteEntry:
    m = r.match
    which = m.WhichOneof("path_specifier")
    if which in ("prefix", "path", "path_separated_prefix"):
        value = getattr(m, which)
        if which == "path_separated_prefix" and (value.endswith("/") or "?" in value):
            raise fail(f"{path}.match.path_separated_prefix", "must not end in '/' or hold '?'")
    elif which is None:
        raise fail(f"{path}.match", "a path specifier (prefix, path, ...) is required")
    else:
        raise fail(f"{path}.match.{which}", "unsupported path specifier")
    case_sensitive = m.case_sensitive.value if m.HasField("case_sensitive") else True
    match = RouteMatch(which, value, case_sensitive)
    kind = r.WhichOneof("action")
    if kind != "route":
        return RouteEntry(r.name, match, None)
    a = r.route
    spec = a.WhichOneof("cluster_specifier")
    if spec == "cluster":
        if not a.cluster:
            raise fail(f"{path}.route.cluster", "must not be empty")
        action = RouteAction(a.cluster, timeout=duration_seconds(a, "timeout"))
    elif spec == "weighted_clusters":
        weights = []
        for i, cw in enumerate(a.weighted_clusters.clusters):
            if not cw.name:
                raise fail(
                    f"{path}.route.weighted_clusters.clusters[{i}].name", "must not be empty"
                )
            weights.append(ClusterWeight(cw.name, cw.weight.value))
        if sum(w.weight for w in weights) <= 0:
            raise fail(f"{path}.route.weighted_clusters", "total weight must be positive")
        action = RouteAction(None, tuple(weights), duration_seconds(a, "timeout"))
    else:
        raise fail(f"{path}.route.cluster_specifier", f"unsupported: {spec}")
    return RouteEntry(r.name, match, action)
