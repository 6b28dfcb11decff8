"""BookInfo through three clients of the control plane: grpcio, meshlib and Envoy.

The config is ``tests/peers/bookinfo_config`` (Istio's sample routing: reviews split 50/50
between v1 and v3, user "jason" to reviews v2 and to a 100% abort from ratings). Each
client must ACK everything (zero NACKs recorded at the control plane) and its traffic
must follow the config. Split counts are checked within binomial bounds (n=200,
p=0.5: the 3.5-sigma interval is 75-125).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from meshlib.controlplane import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    ControlPlane,
)

from .bookinfo import WORKLOADS, write_config
from .peer_support import EnvoyProcess, GrpcXdsClient, grpc_backends, http_backends

pytestmark = pytest.mark.timeout(60)

ALL_TYPES = (LISTENER_TYPE, ROUTE_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE)
N = 200
LOW, HIGH = 75, 125


@pytest.fixture
def grpc_cp(tmp_path: Path) -> Iterator[ControlPlane]:
    with grpc_backends(WORKLOADS) as ports:
        write_config(tmp_path / "config", ports)
        with ControlPlane(tmp_path / "config") as cp:
            yield cp


def test_grpcio_follows_bookinfo_with_zero_nacks(grpc_cp: ControlPlane, tmp_path: Path) -> None:
    client = GrpcXdsClient(grpc_cp.bootstrap(namespace="default"), tmp_path)
    try:
        counts, errors = client.call("xds:///reviews:9080", N)
        assert not errors
        assert set(counts) == {"reviews-v1", "reviews-v3"}, counts
        assert LOW <= counts["reviews-v1"] <= HIGH, counts

        counts, errors = client.call("xds:///reviews.default:9080", 20, end_user="jason")
        assert (counts, errors) == ({"reviews-v2": 20}, {})

        counts, errors = client.call("xds:///ratings:9080", 10, end_user="jason")
        assert not counts and sum(errors.values()) == 10, errors
        counts, errors = client.call("xds:///ratings:9080", 10)
        assert (counts, errors) == ({"ratings-v1": 10}, {})

        counts, errors = client.call("xds:///productpage.default.svc.cluster.local:9080", 5)
        assert (counts, errors) == ({"productpage-v1": 5}, {})
        for type_url in ALL_TYPES:
            grpc_cp.wait_for_ack(client.node_id, type_url, timeout=5)
    finally:
        client.close()
    assert grpc_cp.nacks() == []
    assert grpc_cp.problems == ()


def test_meshlib_acks_bookinfo(tmp_path: Path) -> None:
    from meshlib import Mesh

    with http_backends(WORKLOADS) as (ports, _seen):
        write_config(tmp_path / "config", ports)
        with ControlPlane(tmp_path / "config") as cp:
            boot = cp.bootstrap(namespace="default")
            with Mesh(bootstrap=boot) as mesh, mesh.httpx_client(timeout=5) as client:
                for host in ("productpage", "details", "ratings", "reviews"):
                    r = client.get(f"http://{host}:9080/")
                    assert r.status_code == 200
                    assert r.json()["workload"].startswith(host)
                assert client.get("http://productpage:9080/").json()["workload"] == (
                    "productpage-v1"
                )
                for type_url in ALL_TYPES:
                    cp.wait_for_ack(boot["node"]["id"], type_url, timeout=5)
            assert cp.nacks() == []


def _get(port: int, host: str, n: int, **headers: str) -> tuple[dict[str, int], dict[int, int]]:
    workloads: dict[str, int] = {}
    statuses: dict[int, int] = {}
    with httpx.Client(timeout=5) as client:
        for _ in range(n):
            r = client.get(f"http://127.0.0.1:{port}/", headers={"host": host, **headers})
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            if r.status_code == 200:
                w = r.json()["workload"]
                workloads[w] = workloads.get(w, 0) + 1
    return workloads, statuses


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_envoy_follows_bookinfo_with_zero_nacks(tmp_path: Path, delta: bool) -> None:
    with http_backends(WORKLOADS) as (ports, _seen):
        write_config(tmp_path / "config", ports)
        with ControlPlane(tmp_path / "config") as cp:
            envoy = EnvoyProcess(cp, tmp_path, delta=delta)
            try:
                envoy.wait_ready()
                port = envoy.port(9080)
                counts, statuses = _get(port, "reviews.default.svc.cluster.local:9080", N)
                assert statuses == {200: N}
                assert set(counts) == {"reviews-v1", "reviews-v3"}, counts
                assert LOW <= counts["reviews-v1"] <= HIGH, counts

                counts, _ = _get(port, "reviews:9080", 10, **{"end-user": "jason"})
                assert counts == {"reviews-v2": 10}
                counts, statuses = _get(port, "ratings:9080", 10, **{"end-user": "jason"})
                assert statuses == {500: 10}
                counts, _ = _get(port, "ratings", 10)
                assert counts == {"ratings-v1": 10}
                counts, _ = _get(port, "productpage.default:9080", 5)
                assert counts == {"productpage-v1": 5}

                for type_url in ALL_TYPES:
                    cp.wait_for_ack(envoy.node_id, type_url, timeout=5)
                assert cp.nacks() == []
                assert envoy.rejected() == []
                dump = envoy.config_dump()
                kinds = {c["@type"].rsplit(".", 1)[-1] for c in dump["configs"]}
                assert {"ListenersConfigDump", "ClustersConfigDump", "RoutesConfigDump"} <= kinds
                text = str(dump)
                assert "outbound|9080|v3|reviews.default.svc.cluster.local" in text
                assert "error_state" not in text
            finally:
                envoy.stop()
