"""Resource types: decode and validate xDS resources into immutable, typed models."""

from ._base import ResourceError, ResourceType
from .cluster import ClusterResource, ClusterType
from .endpoints import Endpoint, EndpointsResource, EndpointsType, LocalityEndpoints
from .listener import HttpFilter, ListenerResource, ListenerType
from .route import (
    ClusterWeight,
    RouteAction,
    RouteConfigResource,
    RouteConfigType,
    RouteEntry,
    RouteMatch,
    VirtualHost,
)

LISTENER = ListenerType()
ROUTE_CONFIG = RouteConfigType()
CLUSTER = ClusterType()
ENDPOINTS = EndpointsType()

__all__ = [
    "CLUSTER",
    "ENDPOINTS",
    "LISTENER",
    "ROUTE_CONFIG",
    "ClusterResource",
    "ClusterType",
    "ClusterWeight",
    "Endpoint",
    "EndpointsResource",
    "EndpointsType",
    "HttpFilter",
    "ListenerResource",
    "ListenerType",
    "LocalityEndpoints",
    "ResourceError",
    "ResourceType",
    "RouteAction",
    "RouteConfigResource",
    "RouteConfigType",
    "RouteEntry",
    "RouteMatch",
    "VirtualHost",
]
