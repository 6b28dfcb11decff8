"""Fixtures: three sync gRPC backends, a control plane serving hand-built xDS, a Mesh."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from meshlib import Mesh
from meshlib.controlplane import ControlPlane

from .support import Backend, StaticCache, route, service

pytestmark = pytest.mark.timeout(60)

TARGET = "echo:7070"
CLUSTER = "outbound|7070||echo"


@pytest.fixture
def backends() -> Iterator[list[Backend]]:
    started = [Backend(f"b{i}") for i in range(3)]
    yield started
    for b in started:
        b.stop()


MeshFactory = Callable[[dict[str, dict[str, Any]]], tuple[Mesh, StaticCache]]


@pytest.fixture
def mesh_factory(tmp_path: Path) -> Iterator[MeshFactory]:
    """Start a control plane on the given resources and a Mesh on it."""
    stack: list[Any] = []

    def make(resources: dict[str, dict[str, Any]]) -> tuple[Mesh, StaticCache]:
        cache = StaticCache(resources)
        (tmp_path / "empty").mkdir(exist_ok=True)
        cp = ControlPlane(tmp_path / "empty", cache=cache).start()
        mesh = Mesh(bootstrap=cp.bootstrap(), resolve_timeout=5)
        stack.extend([cp, mesh])
        return mesh, cache

    yield make
    for item in reversed(stack):
        item.close() if isinstance(item, Mesh) else item.stop()


@pytest.fixture
def mesh(backends: list[Backend], mesh_factory: MeshFactory) -> Mesh:
    """``echo:7070`` -> one cluster over the three backends (route timeout 0 = none)."""
    resources = service(TARGET, [route(CLUSTER)], {CLUSTER: [b.address for b in backends]})
    return mesh_factory(resources)[0]
