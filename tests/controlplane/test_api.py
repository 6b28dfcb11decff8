"""The public surface of meshlib.controlplane."""

from __future__ import annotations

import meshlib.controlplane as cp


def test_exported_names() -> None:
    assert sorted(cp.__all__) == sorted(
        [
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
    )
    for name in cp.__all__:
        assert getattr(cp, name) is not None
        obj = getattr(cp, name)
        if callable(obj):
            assert obj.__doc__, f"{name} has no docstring"
