"""Routing: virtual host selection and route matching, compiled once per Snapshot."""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass

from xds_client.resources import RouteAction, RouteConfigResource, RouteMatch, VirtualHost

from ._call import Call

__all__ = ["RoutePlan", "RouteTable", "compile_route_config"]

# Envoy's default when a route sets no timeout.
DEFAULT_ROUTE_TIMEOUT = 15.0


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """The routing decision for one call: which cluster, within what time."""

    route_name: str
    cluster: str
    timeout: float | None  # None: no limit (an explicit 0 in xDS)


_PathMatcher = Callable[[str], bool]


def _path_matcher(m: RouteMatch) -> _PathMatcher:
    value = m.value if m.case_sensitive else m.value.lower()
    fold: Callable[[str], str] = (lambda p: p) if m.case_sensitive else str.lower
    if m.kind == "prefix":
        return lambda p: fold(p).startswith(value)
    if m.kind == "path":
        return lambda p: fold(p) == value
    # path_separated_prefix: the prefix, then end of path or '/'
    n = len(value)
    return lambda p: fold(p).startswith(value) and (len(p) == n or p[n] == "/")


class _Chooser:
    """Picks the cluster for a route: fixed, or by weight."""

    def __init__(self, action: RouteAction) -> None:
        if action.cluster is not None:
            self.names: tuple[str, ...] = (action.cluster,)
            self.cumulative: list[int] = [1]
        else:
            self.names = tuple(w.name for w in action.weighted_clusters)
            self.cumulative = list(itertools.accumulate(w.weight for w in action.weighted_clusters))

    def choose(self) -> str:
        if len(self.names) == 1:
            return self.names[0]
        point = random.random() * self.cumulative[-1]
        return self.names[bisect.bisect_right(self.cumulative, point)]


@dataclass(frozen=True, slots=True)
class _CompiledRoute:
    name: str
    matches: _PathMatcher
    chooser: _Chooser | None  # None: non-forwarding route
    timeout: float | None


def _compile_vhost(vh: VirtualHost) -> tuple[_CompiledRoute, ...]:
    out = []
    for r in vh.routes:
        chooser = _Chooser(r.action) if r.action is not None else None
        timeout: float | None = DEFAULT_ROUTE_TIMEOUT
        if r.action is not None and r.action.timeout is not None:
            timeout = r.action.timeout or None
        out.append(_CompiledRoute(r.name, _path_matcher(r.match), chooser, timeout))
    return tuple(out)


class RouteTable:
    """A compiled RouteConfiguration. ``route(call)`` walks one virtual host."""

    def __init__(self, config: RouteConfigResource) -> None:
        self.name = config.name
        self._exact: dict[str, tuple[_CompiledRoute, ...]] = {}
        self._suffix: list[tuple[str, tuple[_CompiledRoute, ...]]] = []
        self._prefix: list[tuple[str, tuple[_CompiledRoute, ...]]] = []
        self._any: tuple[_CompiledRoute, ...] | None = None
        for vh in config.virtual_hosts:
            routes = _compile_vhost(vh)
            for domain in vh.domains:
                d = domain.lower()
                if d == "*":
                    self._any = self._any if self._any is not None else routes
                elif d.startswith("*"):
                    self._suffix.append((d[1:], routes))
                elif d.endswith("*"):
                    self._prefix.append((d[:-1], routes))
                else:
                    self._exact.setdefault(d, routes)
        # Envoy: the longest wildcard wins.
        self._suffix.sort(key=lambda e: -len(e[0]))
        self._prefix.sort(key=lambda e: -len(e[0]))

    def virtual_host(self, host: str) -> tuple[_CompiledRoute, ...] | None:
        """Envoy's order: exact, then suffix wildcard, then prefix wildcard, then ``*``."""
        h = host.lower()
        routes = self._exact.get(h)
        if routes is not None:
            return routes
        for suffix, routes in self._suffix:
            if len(h) > len(suffix) and h.endswith(suffix):
                return routes
        for prefix, routes in self._prefix:
            if len(h) > len(prefix) and h.startswith(prefix):
                return routes
        return self._any

    def route(self, call: Call) -> RoutePlan | None:
        """The plan for ``call``, or None when no route matches (Envoy: 404)."""
        routes = self.virtual_host(call.headers.get("host") or call.authority)
        if routes is None:
            return None
        path = call.path.split("?", 1)[0]
        for r in routes:
            if r.matches(path):
                if r.chooser is None:
                    return None
                return RoutePlan(r.name, r.chooser.choose(), r.timeout)
        return None


def compile_route_config(config: RouteConfigResource) -> RouteTable:
    return RouteTable(config)
