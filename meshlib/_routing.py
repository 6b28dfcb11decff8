"""Routing (compatibility module): see :mod:`meshlib.routing`."""

from .resilience.timeouts import DEFAULT_ROUTE_TIMEOUT
from .routing import RoutePlan, RouteTable, compile_route_config

__all__ = ["DEFAULT_ROUTE_TIMEOUT", "RoutePlan", "RouteTable", "compile_route_config"]
