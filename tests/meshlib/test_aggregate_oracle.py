"""Aggregate clusters: grpcio's own xDS client (gRFC A37) is the oracle for ACK / NACK.

A scripted ADS server serves Listener -> RouteConfiguration -> aggregate Cluster ``agg``
(children ``c1``, ``c2``: EDS clusters with endpoints). For each case one field of
``agg`` is changed; grpcio's xDS client (in a subprocess) and xds_client subscribe to
the same server, and their first reply to the Cluster response must agree, except for
the divergences listed with the reason (Envoy, ``envoy --mode validate``, is the other
reference; where the two disagree meshlib follows Envoy).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2
from google.protobuf import struct_pb2
from google.protobuf.message import Message

from meshlib import Mesh
from tests.meshlib.cluster_xds import api_listener, cla, cluster, control_plane, routes
from tests.meshlib.test_aggregate_e2e import UNHEALTHY, with_health
from tests.meshlib.test_aggregate_e2e import aggregate as e2e_aggregate
from tests.meshlib.test_cluster_e2e import wait_for
from tests.peers.test_grpc_xds_oracle import Backend as GrpcBackend
from tests.peers.test_grpc_xds_oracle import XdsClientProcess
from tests.xds_client.conftest import FAST, Recorder
from tests.xds_client.test_oracle import GRPC_CLIENT, first_reply
from xds_client import XdsClient, load_bootstrap
from xds_client import builders as b
from xds_client.resources import CLUSTER, ENDPOINTS, LISTENER, ROUTE_CONFIG
from xds_client.testing import ScriptedAdsServer

pytestmark = pytest.mark.timeout(120)
LDS, RDS, CDS, EDS = LISTENER.type_url, ROUTE_CONFIG.type_url, CLUSTER.type_url, ENDPOINTS.type_url
TARGET, ROUTE = "svc:80", "route-1"


def aggregate(name: str, children: list[str], lb_policy: int = 0) -> cluster_pb2.Cluster:
    """An aggregate cluster; lb_policy ROUND_ROBIN (0), as grpcio requires."""
    c = cluster_pb2.Cluster(name=name, lb_policy=lb_policy)
    c.connect_timeout.seconds = 1
    c.cluster_type.name = "envoy.clusters.aggregate"
    c.cluster_type.typed_config.Pack(aggregate_pb2.ClusterConfig(clusters=children))
    return c


def world() -> dict[str, dict[str, Message]]:
    return {
        LDS: {TARGET: b.api_listener(TARGET, ROUTE)},
        RDS: {ROUTE: b.route_config(ROUTE, "agg", ["svc", "svc:80"])},
        CDS: {
            "agg": aggregate("agg", ["c1", "c2"]),
            "c1": b.cluster("c1"),
            "c2": b.cluster("c2"),
        },
        EDS: {
            "c1": b.endpoints("c1", [("127.0.0.1", 1)]),
            "c2": b.endpoints("c2", [("127.0.0.1", 2)]),
        },
    }


@dataclass(frozen=True)
class Case:
    name: str
    change: Callable[[cluster_pb2.Cluster], None]


def _children(*names: str) -> Callable[[cluster_pb2.Cluster], None]:
    def apply(c: cluster_pb2.Cluster) -> None:
        c.cluster_type.typed_config.Pack(aggregate_pb2.ClusterConfig(clusters=list(names)))

    return apply


def _lb_policy(value: int) -> Callable[[cluster_pb2.Cluster], None]:
    return lambda c: setattr(c, "lb_policy", value)


CASES = [
    Case("aggregate with ROUND_ROBIN (the default)", lambda c: None),
    Case("aggregate with CLUSTER_PROVIDED", _lb_policy(cluster_pb2.Cluster.CLUSTER_PROVIDED)),
    Case("aggregate with RING_HASH", _lb_policy(cluster_pb2.Cluster.RING_HASH)),
    Case("empty clusters list", _children()),
    Case("empty child name", _children("c1", "")),
    Case("duplicate child", _children("c1", "c1")),
    Case("names itself", _children("c1", "agg")),
    Case("nested aggregate child", _children("c1", "c2", "other-agg")),
    Case(
        "typed_config not a ClusterConfig",
        lambda c: c.cluster_type.typed_config.Pack(struct_pb2.Struct()),
    ),
    Case("other extension name", lambda c: setattr(c.cluster_type, "name", "x.custom")),
]

# case -> (grpcio, xds_client, why)
DIVERGENCES: dict[str, tuple[str, str, str]] = {
    "aggregate with CLUSTER_PROVIDED": (
        "NACK",
        "ACK",
        "Envoy requires CLUSTER_PROVIDED on an aggregate (envoy --mode validate rejects "
        "anything else); grpcio rejects it. meshlib takes both dialects",
    ),
    "aggregate with RING_HASH": (
        "ACK",
        "NACK",
        "grpcio applies the aggregate's policy across its children; Envoy rejects it and "
        "lets each child's own policy pick, as meshlib does, so meshlib NACKs a policy "
        "it would ignore",
    ),
}


def serve(case: Case) -> ScriptedAdsServer:
    server = ScriptedAdsServer()
    resources = world()
    agg = resources[CDS]["agg"]
    assert isinstance(agg, cluster_pb2.Cluster)
    case.change(agg)
    for type_url, items in resources.items():
        server.set_resources(type_url, {n: b.pack(m) for n, m in items.items()})
    return server


def decision(case: Case) -> tuple[str, str]:
    with serve(case) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_")}
        env["GRPC_XDS_BOOTSTRAP_CONFIG"] = json.dumps(server.bootstrap("grpc-oracle"))
        env["GRPC_VERBOSITY"] = "NONE"
        proc = subprocess.Popen(
            [sys.executable, "-c", GRPC_CLIENT, f"xds:///{TARGET}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        try:
            grpc_kind = first_reply(server, "grpc-oracle", CDS)
            client = XdsClient(load_bootstrap(server.bootstrap("meshlib")), backoff=FAST)
            try:
                client.watch(CLUSTER, "agg", Recorder())
                ours = first_reply(server, "meshlib", CDS)
            finally:
                client.close()
        finally:
            proc.communicate(b"", timeout=10)
    return grpc_kind, ours


@pytest.fixture(scope="module")
def decisions() -> Iterator[dict[str, tuple[str, str]]]:
    with futures.ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(zip((c.name for c in CASES), pool.map(decision, CASES), strict=True))
    yield results


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_same_decision_as_grpcio(case: Case, decisions: dict[str, tuple[str, str]]) -> None:
    grpc_kind, ours = decisions[case.name]
    if case.name in DIVERGENCES:
        expected_grpc, expected_ours, _why = DIVERGENCES[case.name]
        assert (grpc_kind, ours) == (expected_grpc, expected_ours)
        return
    assert ours == grpc_kind, f"{case.name}: grpcio {grpc_kind}, xds_client {ours}"


# -- behaviour: grpcio and meshlib's gRPC channel fail over alike ------------------------
def test_grpcio_and_meshlib_fail_over_alike(tmp_path: Path) -> None:
    """The primary's endpoints turn unhealthy, then vanish: both clients move to the
    secondary; healthy again, both come back. (Partial health is where they differ:
    gRPC's priority policy keeps all traffic on a primary with any ready endpoint,
    Envoy and meshlib spill by the overprovisioning rule: see test_envoy_aggregate.)"""
    backends = [GrpcBackend(f"b{i}") for i in range(3)]
    cp, cache = control_plane(tmp_path)
    cp.start()
    grpcio: XdsClientProcess | None = None
    try:

        def weighted(name: str, ports: list[int]) -> Any:
            assignment = cla(name, ports)  # gRPC ignores a locality without a weight
            assignment.endpoints[0].load_balancing_weight.value = 1
            return assignment

        def install(primary: Any) -> None:
            cache.install(
                e2e_aggregate("agg", ["primary", "secondary"], lb_policy="ROUND_ROBIN"),
                cluster("primary"),
                cluster("secondary"),
                primary,
                weighted("secondary", [backends[2].port]),
                routes("r", [("/", "agg", {})]),
                api_listener("svc.test:80", "r"),
            )

        primary_ports = [b.port for b in backends[:2]]
        install(weighted("primary", primary_ports))
        grpcio = XdsClientProcess(cp.bootstrap(), tmp_path)
        with Mesh(cp.bootstrap()) as mesh, mesh.grpc_channel("xds:///svc.test:80") as channel:
            echo = channel.unary_unary("/test.Echo/Echo")

            def both(n: int) -> tuple[set[str], set[str]] | None:
                assert grpcio is not None
                theirs = grpcio.call("xds:///svc.test:80", n)
                try:
                    ours = {echo(b"x", timeout=5).decode() for _ in range(n)}
                except grpc.RpcError:
                    return None
                return None if theirs["errors"] else (set(theirs["counts"]), ours)

            def settle(expected: set[str], what: str) -> None:
                wait_for(lambda: both(6) == (expected, expected), what, timeout=20)
                assert both(12) == (expected, expected), what

            settle({"b0", "b1"}, "the healthy primary")
            install(with_health(weighted("primary", primary_ports), UNHEALTHY, UNHEALTHY))
            settle({"b2"}, "failover to the secondary")
            install(endpoint_pb2.ClusterLoadAssignment(cluster_name="primary"))
            settle({"b2"}, "an empty primary")
            install(weighted("primary", primary_ports))
            settle({"b0", "b1"}, "back on the primary")
        assert cp.nacks() == []
    finally:
        if grpcio is not None:
            grpcio.close()
        cp.stop()
        for b in backends:
            b.server.stop(0)
