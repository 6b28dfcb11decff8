"""The embedded xDS control plane.

Reads Kubernetes and Istio objects (Service, EndpointSlice, Endpoints, Pod,
ServiceEntry, WorkloadEntry, VirtualService, DestinationRule, PeerAuthentication,
RequestAuthentication, AuthorizationPolicy, Sidecar) from YAML/JSON files, translates
them into xDS resources named as istiod names them, and serves them over ADS (state of
the world and delta):
API listeners to proxyless clients (gRPC's xDS client, meshlib's ``xds_client``),
socket listeners, clusters, routes and SDS secrets to Envoy.
"""

from ._controlplane import ControlPlane
from .ca._authority import (
    CertificateAuthority,
    CertificateError,
    WorkloadCertificate,
    WorkloadCertRotator,
    WorkloadFiles,
    spiffe_id,
)
from .objects._istio_authn import RequestAuthentication
from .objects._istio_mesh import (
    AuthorizationPolicy,
    PeerAuthentication,
    ServiceEntry,
    Sidecar,
    WorkloadEntry,
)
from .objects._istio_networking import VirtualService
from .objects._istio_policy import DestinationRule
from .objects._kubernetes import (
    ConfigError,
    Endpoint,
    EndpointConditions,
    EndpointPort,
    EndpointSlice,
    MeshObjects,
    ObjectRef,
    Pod,
    Service,
    ServicePort,
)
from .sources._files import FileSource, LoadResult, Source
from .sources._live import (
    RESOURCE_KINDS,
    Backoff,
    KubernetesError,
    KubernetesSource,
    LiveSource,
    ResourceKind,
)
from .translate._tls import SECRET_TYPE
from .translate._translate import cluster_name, translate
from .xds._cache import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    Resources,
    Snapshot,
    SnapshotCache,
    VersionedSnapshotCache,
)
from .xds._events import AckEvent
from .xds._views import NodeView, node_view

__all__ = [
    "CLUSTER_TYPE",
    "ENDPOINT_TYPE",
    "LISTENER_TYPE",
    "RESOURCE_KINDS",
    "ROUTE_TYPE",
    "SECRET_TYPE",
    "AckEvent",
    "AuthorizationPolicy",
    "Backoff",
    "CertificateAuthority",
    "CertificateError",
    "ConfigError",
    "ControlPlane",
    "DestinationRule",
    "Endpoint",
    "EndpointConditions",
    "EndpointPort",
    "EndpointSlice",
    "FileSource",
    "KubernetesError",
    "KubernetesSource",
    "LiveSource",
    "LoadResult",
    "MeshObjects",
    "NodeView",
    "ObjectRef",
    "PeerAuthentication",
    "Pod",
    "RequestAuthentication",
    "ResourceKind",
    "Resources",
    "Service",
    "ServiceEntry",
    "ServicePort",
    "Sidecar",
    "Snapshot",
    "SnapshotCache",
    "Source",
    "VersionedSnapshotCache",
    "VirtualService",
    "WorkloadCertRotator",
    "WorkloadCertificate",
    "WorkloadEntry",
    "WorkloadFiles",
    "cluster_name",
    "node_view",
    "spiffe_id",
    "translate",
]
