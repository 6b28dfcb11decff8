"""The cluster statistics meshlib's ``/stats`` gives under Envoy's names are names real
Envoy (1.40) gives too, for the same cluster from the same control plane (Istio's
circuit-breaking DestinationRule), and the lines Istio's task greps are the same."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import httpx
import pytest
import yaml

from meshlib import Mesh
from meshlib.admin import AdminServer
from meshlib.controlplane import ControlPlane
from tests.admin.test_circuit_breaking_task import CLUSTER, DESTINATION_RULE
from tests.support import service_objects, write_config

from .peer_support import EnvoyProcess

pytestmark = pytest.mark.timeout(120)
PREFIX = f"cluster.{CLUSTER};."
FAMILIES = (
    "circuit_breakers.",
    "upstream_rq_pending",
    "upstream_cx_overflow",
    "upstream_rq_retry",
    "outlier_detection.",
    "membership_",
)  # upstream_rq_drop_overload: Envoy 1.40 shows none for this cluster (no drop_overloads)


def _names(text: str) -> set[str]:
    return {
        line.rpartition(": ")[0].removeprefix(PREFIX)
        for line in text.splitlines()
        if line.startswith(PREFIX)
    }


def test_meshlib_stat_names_are_envoys(tmp_path: Path) -> None:
    objects = service_objects("httpbin", 8000, [("127.0.0.1", 9)])
    write_config(tmp_path / "config", [*objects, yaml.safe_load(DESTINATION_RULE)])
    with ControlPlane(tmp_path / "config") as cp:
        envoy = EnvoyProcess(cp, tmp_path, (8000,))
        try:
            envoy.wait_ready()
            for _ in range(100):  # bounded: until Envoy has the cluster
                text = httpx.get(f"http://{envoy.admin}/stats", timeout=5).text
                envoy_names = _names(text)
                if envoy_names:
                    break
                time.sleep(0.1)
        finally:
            envoy.stop()
        node = "sidecar~127.0.0.1~fortio-1.default~default.svc.cluster.local"
        with Mesh(bootstrap=cp.bootstrap(node_id=node)) as mesh, AdminServer(mesh) as admin:
            # nothing listens on the endpoint: the cluster is what matters
            with mesh.httpx_client(timeout=2) as client, contextlib.suppress(httpx.HTTPError):
                client.get("http://httpbin.default.svc.cluster.local:8000/get")
            meshlib_names = _names(httpx.get(admin.url + "/stats", timeout=5).text)
    ours = {n for n in meshlib_names if n.startswith(FAMILIES)}
    print(f"{len(ours)} meshlib stat names checked against {len(envoy_names)} of Envoy's")
    httpbin = [ln for ln in text.splitlines() if "httpbin" in ln][:5]
    assert ours and ours <= envoy_names, (sorted(ours - envoy_names), httpbin)
    pending = {n for n in envoy_names if "pending" in n}
    assert {n for n in meshlib_names if "pending" in n} == pending
