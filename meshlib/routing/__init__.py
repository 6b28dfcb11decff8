"""Routing: virtual host selection, route matching and actions, compiled once per Snapshot.

``RouteTable(config).route(call)`` returns a :class:`RoutePlan` (or None: no route).
"""

from ._headers import HeaderList, MutationChain
from ._matchers import HeaderPredicate, StringPredicate, compile_header, compile_string
from ._plan import RoutePlan
from ._table import RouteTable, compile_route_config

__all__ = [
    "HeaderList",
    "HeaderPredicate",
    "MutationChain",
    "RoutePlan",
    "RouteTable",
    "StringPredicate",
    "compile_header",
    "compile_route_config",
    "compile_string",
]
