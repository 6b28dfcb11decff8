"""The public surface of meshlib.controlplane."""

from __future__ import annotations

import meshlib.controlplane as cp


def test_exported_names() -> None:
    assert sorted(cp.__all__) == sorted(
        [
            "AckEvent",
            "AuthorizationPolicy",
            "Backoff",
            "CLUSTER_TYPE",
            "CertificateAuthority",
            "CertificateError",
            "ConfigError",
            "ControlPlane",
            "DestinationRule",
            "ENDPOINT_TYPE",
            "Endpoint",
            "EndpointConditions",
            "EndpointPort",
            "EndpointSlice",
            "FileSource",
            "KubernetesError",
            "KubernetesSource",
            "LISTENER_TYPE",
            "LiveSource",
            "LoadResult",
            "MeshObjects",
            "NodeView",
            "ObjectRef",
            "PeerAuthentication",
            "Pod",
            "RequestAuthentication",
            "RESOURCE_KINDS",
            "ROUTE_TYPE",
            "ResourceKind",
            "Resources",
            "SECRET_TYPE",
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
    )
    for name in cp.__all__:
        assert getattr(cp, name) is not None
        obj = getattr(cp, name)
        if callable(obj):
            assert obj.__doc__, f"{name} has no docstring"
