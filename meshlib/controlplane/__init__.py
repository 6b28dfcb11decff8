"""The embedded xDS control plane.

Reads Kubernetes objects (Service, EndpointSlice) from YAML/JSON files, translates them
into xDS resources named as istiod's proxyless-gRPC generator names them, and serves
them over ADS (state of the world) to gRPC's xDS client, meshlib's ``xds_client`` or
anything else that speaks xDS v3.
"""

from ._cache import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    Resources,
    Snapshot,
    SnapshotCache,
    VersionedSnapshotCache,
)
from ._controlplane import ControlPlane
from ._events import AckEvent
from ._objects import (
    ConfigError,
    Endpoint,
    EndpointConditions,
    EndpointPort,
    EndpointSlice,
    MeshObjects,
    ObjectRef,
    Service,
    ServicePort,
)
from ._sources import FileSource, Source
from ._translate import cluster_name, translate

__all__ = [
    "CLUSTER_TYPE",
    "ENDPOINT_TYPE",
    "LISTENER_TYPE",
    "ROUTE_TYPE",
    "AckEvent",
    "ConfigError",
    "ControlPlane",
    "Endpoint",
    "EndpointConditions",
    "EndpointPort",
    "EndpointSlice",
    "FileSource",
    "MeshObjects",
    "ObjectRef",
    "Resources",
    "Service",
    "ServicePort",
    "Snapshot",
    "SnapshotCache",
    "Source",
    "VersionedSnapshotCache",
    "cluster_name",
    "translate",
]
