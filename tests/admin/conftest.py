"""A live mesh for the admin tests: the project's control plane, three uvicorn replicas,
a Mesh that has sent 30 requests through ``mesh.httpx_client()``, and its AdminServer."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.metrics import NoOpMeterProvider

from meshlib import Mesh
from meshlib.admin import AdminServer
from meshlib.controlplane import ControlPlane
from meshlib.telemetry import Telemetry
from tests.support import UvicornThread, service_objects, write_config
from tests.test_walking_skeleton import replica_app

CLUSTER = "outbound|9080||reviews.default.svc.cluster.local"
URL = "http://reviews.default.svc.cluster.local:9080"
REQUESTS = 30


@dataclass
class Live:
    mesh: Mesh
    admin: AdminServer
    telemetry: Telemetry
    backends: list[UvicornThread]
    config: Path

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{b.port}" for b in self.backends]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    config = tmp_path_factory.mktemp("admin") / "config"
    backends = [UvicornThread(replica_app(f"r{i}")).start() for i in range(3)]
    write_config(
        Path(config), service_objects("reviews", 9080, [("127.0.0.1", b.port) for b in backends])
    )
    node = "sidecar~127.0.0.1~productpage-1.default~default.svc.cluster.local"
    telemetry = Telemetry(trace.NoOpTracerProvider(), NoOpMeterProvider())
    try:
        with (
            ControlPlane(config) as cp,
            Mesh(bootstrap=cp.bootstrap(node_id=node)) as mesh,
            mesh.httpx_client(timeout=5) as client,
        ):
            for i in range(REQUESTS):
                assert client.get(f"{URL}/reviews/{i}").status_code == 200
            with AdminServer(mesh, telemetry=telemetry, grpc_port=0) as admin:
                yield Live(mesh, admin, telemetry, backends, Path(config))
    finally:
        for b in backends:
            b.stop()
