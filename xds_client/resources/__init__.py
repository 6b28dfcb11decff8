"""Resource types: decode and validate xDS resources into immutable, typed models."""

from ._base import ResourceError, ResourceType
from ._hcm import FAULT_TYPE
from ._matchers import decode_header_matcher, decode_string_matcher
from ._tls import (
    CertificateProviderInstance,
    DataSource,
    DownstreamTls,
    SanMatcher,
    TlsCertificate,
    ValidationContext,
)
from ._upstream_tls import UpstreamTls
from .cluster import (
    PEAK_EWMA_TYPE_URL,
    CircuitThresholds,
    ClusterResource,
    ClusterType,
    LbConfig,
    OutlierDetection,
    RetryBudget,
    SlowStart,
    ZoneAware,
)
from .endpoints import (
    DropOverload,
    Endpoint,
    EndpointsResource,
    EndpointsType,
    LocalityEndpoints,
)
from .listener import (
    CidrRange,
    FaultConfig,
    FilterChain,
    FilterChainMatch,
    HttpConnectionManager,
    HttpFilter,
    ListenerResource,
    ListenerType,
    RbacConfig,
)
from .route import (
    ClusterWeight,
    RouteAction,
    RouteConfigResource,
    RouteConfigType,
    RouteEntry,
    RouteMatch,
    VirtualHost,
)
from .secret import SecretResource, SecretType

LISTENER = ListenerType()
ROUTE_CONFIG = RouteConfigType()
CLUSTER = ClusterType()
ENDPOINTS = EndpointsType()
SECRET = SecretType()

__all__ = [
    "CLUSTER",
    "ENDPOINTS",
    "FAULT_TYPE",
    "LISTENER",
    "PEAK_EWMA_TYPE_URL",
    "ROUTE_CONFIG",
    "SECRET",
    "CertificateProviderInstance",
    "CidrRange",
    "CircuitThresholds",
    "ClusterResource",
    "ClusterType",
    "ClusterWeight",
    "DataSource",
    "DownstreamTls",
    "DropOverload",
    "Endpoint",
    "EndpointsResource",
    "EndpointsType",
    "FaultConfig",
    "FilterChain",
    "FilterChainMatch",
    "HttpConnectionManager",
    "HttpFilter",
    "LbConfig",
    "ListenerResource",
    "ListenerType",
    "LocalityEndpoints",
    "OutlierDetection",
    "RbacConfig",
    "ResourceError",
    "ResourceType",
    "RetryBudget",
    "RouteAction",
    "RouteConfigResource",
    "RouteConfigType",
    "RouteEntry",
    "RouteMatch",
    "SanMatcher",
    "SecretResource",
    "SecretType",
    "SlowStart",
    "TlsCertificate",
    "UpstreamTls",
    "ValidationContext",
    "VirtualHost",
    "ZoneAware",
    "decode_header_matcher",
    "decode_string_matcher",
]
