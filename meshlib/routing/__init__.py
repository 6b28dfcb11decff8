"""Routing: virtual host selection, route matching and actions, compiled once per Snapshot.

``RouteTable(config).route(call)`` returns a :class:`RoutePlan` (or None: no route).
"""

from ._headers import HeaderList, MutationChain
from ._plan import RoutePlan
from ._table import RouteTable, compile_route_config

__all__ = ["HeaderList", "MutationChain", "RoutePlan", "RouteTable", "compile_route_config"]
