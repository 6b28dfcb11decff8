"""grpcio's own xDS client is the oracle for what to ACK and what to NACK.

For each case, a scripted ADS server on 127.0.0.1 serves a small valid world
(Listener -> RouteConfiguration -> Cluster -> ClusterLoadAssignment) with one resource
changed. grpcio's xDS client (in a subprocess: it reads GRPC_XDS_BOOTSTRAP once per
process) and xds_client connect to the same server; each one's first reply for the
changed resource's type must agree (ACK or NACK).

Cases both implementations support are listed in CASES. Left out on purpose, because
meshlib implements what grpcio does not (Envoy's meaning): lb_policy LEAST_REQUEST,
RANDOM, MAGLEV; STATIC/STRICT_DNS/LOGICAL_DNS clusters; hostname endpoints.
Where both implement a field but read it differently, DIVERGENCES records each side's
decision and why; the test asserts those too, so a change on either side shows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import pytest
from envoy.config.endpoint.v3 import endpoint_pb2
from google.protobuf import any_pb2, struct_pb2
from google.protobuf.message import Message

from xds_client import XdsClient, load_bootstrap
from xds_client import builders as b
from xds_client.resources import CLUSTER, ENDPOINTS, LISTENER, ROUTE_CONFIG
from xds_client.testing import ScriptedAdsServer

from .conftest import FAST, Recorder

pytestmark = pytest.mark.timeout(120)
LDS, RDS, CDS, EDS = LISTENER.type_url, ROUTE_CONFIG.type_url, CLUSTER.type_url, ENDPOINTS.type_url
TARGET, ROUTE, CLUSTER_NAME = "svc:80", "route-1", "cluster-1"

GRPC_CLIENT = textwrap.dedent(
    """
    import os, sys, threading, grpc
    channel = grpc.insecure_channel(sys.argv[1])
    call = channel.unary_unary("/test.Echo/Echo")
    threading.Thread(target=lambda: call.future(b"x", timeout=5), daemon=True).start()
    sys.stdin.read()  # keep the ADS stream open until the test is done
    os._exit(0)
    """
)


def world() -> dict[str, dict[str, Message]]:
    return {
        LDS: {TARGET: b.api_listener(TARGET, ROUTE)},
        RDS: {ROUTE: b.route_config(ROUTE, CLUSTER_NAME, ["svc", "svc:80"])},
        CDS: {CLUSTER_NAME: b.cluster(CLUSTER_NAME)},
        EDS: {CLUSTER_NAME: b.endpoints(CLUSTER_NAME, [("127.0.0.1", 1)])},
    }


@dataclass(frozen=True)
class Case:
    name: str
    type_url: str
    change: Callable[[Any], None]


def _listener(fn: Callable[[Any], None]) -> Callable[[Any], None]:
    """Change the HttpConnectionManager inside the listener."""

    def apply(listener: Any) -> None:
        hcm = b.hcm(ROUTE)
        fn(hcm)
        listener.api_listener.api_listener.Pack(hcm)

    return apply


def _unknown_filter(optional: bool) -> Callable[[Any], None]:
    def apply(hcm: Any) -> None:
        router = type(hcm.http_filters[-1])()
        router.CopyFrom(hcm.http_filters[-1])
        del hcm.http_filters[-1]
        f = hcm.http_filters.add(name="x.custom", is_optional=optional)
        f.typed_config.Pack(struct_pb2.Struct())
        hcm.http_filters.add().CopyFrom(router)

    return apply


def _first_group(fn: Callable[[endpoint_pb2.LocalityLbEndpoints], None]) -> Callable[[Any], None]:
    return lambda cla: fn(cla.endpoints[0])


def _second_priority(cla: Any) -> None:
    group = cla.endpoints.add()
    group.CopyFrom(cla.endpoints[0])
    group.priority = 2  # priorities 0 and 2: a gap


CASES = [
    Case("valid world", LDS, lambda m: None),
    Case("hcm without http_filters", LDS, _listener(lambda h: h.ClearField("http_filters"))),
    Case("unknown required http filter", LDS, _listener(_unknown_filter(False))),
    Case("unknown optional http filter", LDS, _listener(_unknown_filter(True))),
    Case(
        "filter after the router",
        LDS,
        _listener(lambda h: h.http_filters.add().CopyFrom(h.http_filters[0])),
    ),
    Case(
        "rds config_source not ads",
        LDS,
        _listener(lambda h: h.rds.config_source.ClearField("ads")),
    ),
    Case(
        "api_listener is not an HttpConnectionManager",
        LDS,
        lambda m: m.api_listener.api_listener.Pack(struct_pb2.Struct()),
    ),
    Case(
        "weighted clusters with total weight 0",
        RDS,
        lambda m: (
            m.virtual_hosts[0].routes[0].route.weighted_clusters.clusters.add(name=CLUSTER_NAME)
        ),
    ),
    Case(
        "route with no path specifier",
        RDS,
        lambda m: m.virtual_hosts[0].routes[0].match.ClearField("prefix"),
    ),
    Case(
        "cluster eds_config neither ads nor self",
        CDS,
        lambda m: m.eds_cluster_config.eds_config.ClearField("ads"),
    ),
    Case("cluster ring hash", CDS, lambda m: setattr(m, "lb_policy", 2)),
    Case(
        "locality without locality field",
        EDS,
        _first_group(lambda g: g.ClearField("locality")),
    ),
    Case(
        "endpoint weight 0",
        EDS,
        _first_group(lambda g: g.lb_endpoints[0].load_balancing_weight.__setattr__("value", 0)),
    ),
    Case(
        "locality weight 0 is ignored",
        EDS,
        _first_group(lambda g: g.load_balancing_weight.__setattr__("value", 0)),
    ),
    Case("sparse priorities", EDS, _second_priority),
    Case("wrong type_url inside Any", CDS, lambda m: None),  # see serve()
    Case("undecodable Any", CDS, lambda m: None),  # see serve()
]


# case -> (grpcio, xds_client, why)
DIVERGENCES = {
    "locality weight 0 is ignored": (
        "ACK",
        "NACK",
        "Envoy's rule on LocalityLbEndpoints.load_balancing_weight is >= 1 when set; "
        "gRPC ignores the locality instead",
    ),
    "sparse priorities": (
        "NACK",
        "ACK",
        "gRPC rejects priority gaps; Envoy only says priorities 'should' not skip "
        "(the EDS decoder's choice; raised with the lead)",
    ),
}


def serve(case: Case) -> ScriptedAdsServer:
    server = ScriptedAdsServer()
    resources = world()
    target = resources[case.type_url]
    (name,) = target
    case.change(target[name])
    for type_url, items in resources.items():
        packed = {n: b.pack(m) for n, m in items.items()}
        if case.name == "wrong type_url inside Any" and type_url == case.type_url:
            packed = {name: b.pack(resources[EDS][CLUSTER_NAME])}
        if case.name == "undecodable Any" and type_url == case.type_url:
            packed = {name: any_pb2.Any(type_url=type_url, value=b"\x0a\xff\xff\x01")}
        server.set_resources(type_url, packed)
    return server


def first_reply(server: ScriptedAdsServer, node: str, type_url: str) -> str:
    def mine(e: Any) -> bool:
        first = next(x for x in server.events if x.stream == e.stream)
        return bool(first.request.node.id == node)

    event = server.wait_for(
        lambda e: e.kind in ("ACK", "NACK") and e.type_url == type_url and mine(e), timeout=20
    )
    return event.kind


def grpc_decision(case: Case) -> tuple[str, str]:
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
            grpc_kind = first_reply(server, "grpc-oracle", case.type_url)
            client = XdsClient(load_bootstrap(server.bootstrap("meshlib")), backoff=FAST)
            try:
                w = Recorder()
                for rtype, name in (
                    (LISTENER, TARGET),
                    (ROUTE_CONFIG, ROUTE),
                    (CLUSTER, CLUSTER_NAME),
                    (ENDPOINTS, CLUSTER_NAME),
                ):
                    client.watch(rtype, name, w)
                ours = first_reply(server, "meshlib", case.type_url)
            finally:
                client.close()
        finally:
            proc.communicate(b"", timeout=10)
    return grpc_kind, ours


@pytest.fixture(scope="module")
def decisions() -> Iterator[dict[str, tuple[str, str]]]:
    with futures.ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip((c.name for c in CASES), pool.map(grpc_decision, CASES), strict=True))
    yield results


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_same_decision_as_grpcio(case: Case, decisions: dict[str, tuple[str, str]]) -> None:
    grpc_kind, ours = decisions[case.name]
    if case.name in DIVERGENCES:
        expected_grpc, expected_ours, _why = DIVERGENCES[case.name]
        assert (grpc_kind, ours) == (expected_grpc, expected_ours)
        return
    assert ours == grpc_kind, f"{case.name}: grpcio {grpc_kind}, xds_client {ours}"
