"""Zone-aware routing: decoding, Envoy's plan (direct / residual spillover / none) against
hand-computed per-zone fractions, the balancer's distribution, panic, and the local
cluster from the bootstrap through the control plane and httpx."""

from __future__ import annotations

import collections
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from envoy.extensions.load_balancing_policies.round_robin.v3 import round_robin_pb2
from google.protobuf import json_format

from meshlib import Call, Mesh
from meshlib.balancing import Balancer, LocalCluster, LocalityGroup, ZonePlan, zone_plan
from meshlib.cluster import EndpointState
from tests.meshlib.cluster_xds import Backend, api_listener, cluster, control_plane, routes
from tests.meshlib.test_cluster_decode import cluster as cluster_any
from tests.meshlib.test_cluster_decode import lbp
from tests.support import UvicornThread
from xds_client import load_bootstrap
from xds_client.resources import CLUSTER, Endpoint, LbConfig, ResourceError
from xds_client.resources.cluster import ZoneAware

CALL = Call("svc:80", "GET", "/")
CHI2_999 = {1: 10.83, 2: 13.82, 3: 16.27}
A, B, C = ("r", "a", ""), ("r", "b", ""), ("r", "c", "")


# -- decoding -------------------------------------------------------------------------------
def rr_zone(**zone: Any) -> round_robin_pb2.RoundRobin:
    spec = {"locality_lb_config": {"zone_aware_lb_config": zone}}
    return json_format.ParseDict(spec, round_robin_pb2.RoundRobin())


@pytest.mark.parametrize(
    ("fields", "expected", "weighted"),
    [
        ({}, ZoneAware(), False),  # Envoy: zone-aware with defaults unless weighted
        (
            {
                "common_lb_config": {
                    "zone_aware_lb_config": {
                        "routing_enabled": {"value": 40},
                        "min_cluster_size": 3,
                        "fail_traffic_on_panic": True,
                    }
                }
            },
            ZoneAware(40.0, 3, True),
            False,
        ),
        ({"common_lb_config": {"locality_weighted_lb_config": {}}}, ZoneAware(), True),
        (
            {
                "load_balancing_policy": lbp(
                    rr_zone(
                        locality_basis="HEALTHY_HOSTS_WEIGHT",
                        force_local_zone={"min_size": 2},
                        min_cluster_size="0",
                    )
                )
            },
            ZoneAware(100.0, 0, False, True, 2),
            False,
        ),
        (
            {"load_balancing_policy": lbp(rr_zone(force_local_zone={}))},
            ZoneAware(force_local_zone_min_size=1),  # min_size defaults to 1
            False,
        ),
    ],
    ids=["defaults", "common", "weighted", "typed", "force-default"],
)
def test_zone_aware_decodes_with_envoy_defaults(
    fields: dict[str, Any], expected: ZoneAware, weighted: bool
) -> None:
    _, c = CLUSTER.decode(cluster_any(**fields))
    assert c.lb.zone_aware == expected and c.lb.locality_weighted == weighted


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        (
            {"common_lb_config": {"zone_aware_lb_config": {"routing_enabled": {"value": 101}}}},
            "common_lb_config.zone_aware_lb_config.routing_enabled.value",
        ),
        (
            {"load_balancing_policy": lbp(rr_zone(force_local_zone={"min_size": 0}))},
            "load_balancing_policy.policies[0].typed_extension_config.typed_config"
            ".locality_lb_config.zone_aware_lb_config.force_local_zone.min_size",
        ),
        (
            {"load_balancing_policy": lbp(rr_zone(routing_enabled={"value": -1}))},
            "load_balancing_policy.policies[0].typed_extension_config.typed_config"
            ".locality_lb_config.zone_aware_lb_config.routing_enabled.value",
        ),
    ],
    ids=["routing-enabled", "force-min-size", "typed-routing-enabled"],
)
def test_bad_zone_aware_is_nacked_with_the_field_path(fields: dict[str, Any], path: str) -> None:
    with pytest.raises(ResourceError) as info:
        CLUSTER.decode(cluster_any(**fields))
    assert info.value.field == path


def test_bootstrap_names_the_local_cluster() -> None:
    raw = {"xds_servers": [{"server_uri": "localhost:1"}]}
    assert load_bootstrap(raw).local_cluster_name == ""
    raw["cluster_manager"] = {"local_cluster_name": "outbound|80||me.ns"}  # type: ignore[assignment]
    assert load_bootstrap(raw).local_cluster_name == "outbound|80||me.ns"
    raw["cluster_manager"] = {"local_cluster_name": 7}  # type: ignore[assignment]
    with pytest.raises(ValueError, match=r"cluster_manager\.local_cluster_name"):
        load_bootstrap(raw)


# -- the plan -------------------------------------------------------------------------------
def local(me: tuple[str, str, str], **counts: int) -> LocalCluster:
    healthy = {("r", z, ""): n for z, n in counts.items()}
    return LocalCluster(me, healthy, healthy, sum(counts.values()))


@pytest.mark.parametrize(
    ("upstream", "mine", "config", "expected"),
    [
        # Envoy's documented example: local 40/40/20 %, upstream 25/50/25 %: keep
        # 25/40 = 62.5% local, spill the rest by residual capacity 10% (b) : 5% (c).
        (
            [(A, 2), (B, 4), (C, 2)],
            local(A, a=4, b=4, c=2),
            ZoneAware(),
            ZonePlan((A, B, C), False, 6250, (0, 1000, 1500)),
        ),
        # the upstream has a larger share in my zone than my own service: all local
        ([(A, 3), (B, 3), (C, 3)], local(A, a=2, b=4, c=4), ZoneAware(), ZonePlan((A, B, C), True)),
        # a zone the local cluster lacks has all its upstream share as residual capacity
        (
            [(B, 2), (A, 2), (C, 4)],
            local(A, a=1, b=1),
            ZoneAware(),
            ZonePlan((A, B, C), False, 5000, (0, 0, 5000)),
        ),
        ([(A, 5)], local(A, a=1, b=1), ZoneAware(min_cluster_size=1), None),  # one locality
        ([(B, 3), (C, 3)], local(A, a=1, b=1), ZoneAware(), None),  # my zone not upstream
        ([(A, 0), (B, 6)], local(A, a=1, b=1), ZoneAware(), None),  # no healthy host there
        ([(A, 2), (B, 3)], local(A, a=1, b=1), ZoneAware(), None),  # 5 < min_cluster_size 6
        (
            [(A, 2), (B, 3)],
            local(A, a=1, b=1),
            ZoneAware(min_cluster_size=5),
            ZonePlan((A, B), False, 8000, (0, 1000)),
        ),
        # force_local_zone: direct once my zone has min_size healthy upstream hosts
        (
            [(A, 1), (B, 9)],
            local(A, a=1, b=1),
            ZoneAware(force_local_zone_min_size=1),
            ZonePlan((A, B), True),
        ),
        (
            [(A, 1), (B, 9)],
            local(A, a=1, b=1),
            ZoneAware(force_local_zone_min_size=2),
            ZonePlan((A, B), False, 2000, (0, 4000)),
        ),
    ],
    ids=[
        "envoy-example",
        "direct",
        "zone-missing-locally",
        "one-locality",
        "no-local-zone",
        "local-zone-unhealthy",
        "too-small",
        "min-cluster-size",
        "force-local",
        "force-local-too-few",
    ],
)
def test_zone_plan(
    upstream: list[tuple[tuple[str, str, str], int]],
    mine: LocalCluster,
    config: ZoneAware,
    expected: ZonePlan | None,
) -> None:
    assert zone_plan([(loc, n, n) for loc, n in upstream], mine, config) == expected


def test_zone_plan_by_weight() -> None:
    # by host count my zone is short (1 of 4 vs 1 of 2); by weight it is not (8 of 11)
    mine = LocalCluster(A, {A: 1, B: 1}, {A: 1, B: 1}, 2)
    upstream = [(A, 1, 8), (B, 3, 3)]
    assert zone_plan(upstream, mine, ZoneAware(min_cluster_size=1)) == ZonePlan(
        (A, B), False, 5000, (0, 2500)
    )
    assert zone_plan(upstream, mine, ZoneAware(min_cluster_size=1, by_weight=True)) == ZonePlan(
        (A, B), True
    )


# -- the balancer -----------------------------------------------------------------------------
_port = iter(range(40000, 50000))


def zone(
    loc: tuple[str, str, str], healthy: int, unhealthy: int = 0, priority: int = 0
) -> LocalityGroup:
    eps = [EndpointState("c", Endpoint("127.0.0.1", next(_port))) for _ in range(healthy)]
    eps += [
        EndpointState("c", Endpoint("127.0.0.1", next(_port), health="UNHEALTHY"))
        for _ in range(unhealthy)
    ]
    return LocalityGroup(1, priority, tuple(eps), loc)


def zone_counts(b: Balancer, groups: list[LocalityGroup], n: int) -> collections.Counter[str]:
    where = {e: g.locality[1] for g in groups for e in g.endpoints}
    return collections.Counter(
        where.get(e, "none") if e else "none" for e in (b.pick(CALL) for _ in range(n))
    )  # type: ignore[arg-type]


def chi2(counts: collections.Counter[str], expected: dict[str, float], n: int) -> float:
    return sum((counts[k] - p * n) ** 2 / (p * n) for k, p in expected.items())


@pytest.mark.parametrize("policy", ["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM"])
def test_requests_spread_by_the_plan(policy: str) -> None:
    groups = [zone(A, 2), zone(B, 4), zone(C, 2)]
    b = Balancer(groups, LbConfig(policy), local=local(A, a=4, b=4, c=2), rng=random.Random(11))
    n = 20_000
    counts = zone_counts(b, groups, n)
    expected = {"a": 0.625, "b": 0.375 * 2 / 3, "c": 0.375 / 3}
    assert set(counts) == set(expected)
    assert chi2(counts, expected, n) < CHI2_999[2]


def test_without_a_local_cluster_requests_spread_over_all_hosts() -> None:
    groups = [zone(A, 2), zone(B, 4), zone(C, 2)]
    b = Balancer(groups, rng=random.Random(1))
    counts = zone_counts(b, groups, 8000)
    assert counts == {"a": 2000, "b": 4000, "c": 2000}  # round robin: exact


def test_direct_keeps_everything_local() -> None:
    groups = [zone(A, 3), zone(B, 3), zone(C, 3)]
    b = Balancer(groups, local=local(A, a=2, b=4, c=4))
    assert zone_counts(b, groups, 900) == {"a": 900}


def test_routing_enabled_considers_a_share_of_requests() -> None:
    groups = [zone(A, 3), zone(B, 3), zone(C, 3)]
    config = LbConfig(zone_aware=ZoneAware(routing_enabled=40.0))
    b = Balancer(groups, config, local=local(A, a=2, b=4, c=4), rng=random.Random(7))
    n = 20_000
    counts = zone_counts(b, groups, n)
    # 40% zone-aware (all to a) + 60% spread over all nine hosts
    expected = {"a": 0.4 + 0.6 / 3, "b": 0.6 / 3, "c": 0.6 / 3}
    assert chi2(counts, expected, n) < CHI2_999[2]


def test_local_cluster_in_panic_disables_zone_routing_or_fails() -> None:
    groups = [zone(A, 3), zone(B, 3), zone(C, 3)]
    panicking = LocalCluster(A, {A: 1, B: 1}, {A: 1, B: 1}, 10)  # 20% healthy < 50%
    b = Balancer(groups, local=panicking)
    assert zone_counts(b, groups, 900) == {"a": 300, "b": 300, "c": 300}
    strict = LbConfig(zone_aware=ZoneAware(fail_traffic_on_panic=True))
    assert zone_counts(Balancer(groups, strict, local=panicking), groups, 50) == {"none": 50}


def test_upstream_panic_balances_over_all_hosts_or_fails() -> None:
    groups = [zone(A, 1, 4), zone(B, 1, 4)]  # 20% healthy: panic
    b = Balancer(groups, local=local(A, a=1, b=1))
    assert b.panic == [True]
    counts = zone_counts(b, groups, 1000)
    assert counts == {"a": 500, "b": 500}
    strict = LbConfig(zone_aware=ZoneAware(fail_traffic_on_panic=True))
    assert all(Balancer(groups, strict).pick(CALL) is None for _ in range(20))


def test_unhealthy_and_ejected_hosts_count_out() -> None:
    groups = [zone(A, 2, 1), zone(B, 4), zone(C, 2)]
    groups[1].endpoints[0].ejected = True
    b = Balancer(groups, local=local(A, a=4, b=4, c=4), rng=random.Random(5))
    # healthy upstream: a 2, b 3, c 2 of 7 (2857, 4285, 2857); local 3333 each:
    # keep 2857/3333 = 85.71% local; spill to b (residual 952), c has none
    n = 20_000
    counts = zone_counts(b, groups, n)
    keep = 2857 * 10_000 // 3333 / 10_000
    assert chi2(counts, {"a": keep, "b": 1 - keep}, n) < CHI2_999[1]
    assert "c" not in counts


def test_only_priority_zero_is_zone_aware() -> None:
    groups = [zone(A, 0, 3), zone(B, 0, 3), zone(A, 3, priority=1), zone(B, 3, priority=1)]
    b = Balancer(groups, local=local(A, a=1, b=3))
    assert b.loads == [0, 100]
    counts = zone_counts(b, groups, 600)
    assert counts == {"a": 300, "b": 300}


@pytest.mark.parametrize(
    "config",
    [LbConfig("RING_HASH"), LbConfig("MAGLEV", table_size=307), LbConfig(locality_weighted=True)],
    ids=["ring-hash", "maglev", "locality-weighted"],
)
def test_policies_without_zone_awareness(config: LbConfig) -> None:
    groups = [zone(A, 3), zone(B, 3), zone(C, 3)]
    b = Balancer(groups, config, local=local(A, a=2, b=4, c=4), rng=random.Random(3))
    counts = zone_counts(b, groups, 3000)
    assert counts["a"] < 1500  # direct zone routing would send all 3000 to a


# -- end to end: the bootstrap's local cluster through the control plane and httpx -----------
def cla_zones(name: str, zones: dict[str, list[tuple[str, int]]]) -> Any:
    from envoy.config.endpoint.v3 import endpoint_pb2

    spec = {
        "cluster_name": name,
        "endpoints": [
            {
                "locality": {"region": "r", "zone": z},
                "lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": h, "port_value": p}}}}
                    for h, p in eps
                ],
            }
            for z, eps in zones.items()
        ],
    }
    return json_format.ParseDict(spec, endpoint_pb2.ClusterLoadAssignment())


def wait_for_plan(mesh: Mesh, done: Any) -> None:
    deadline = time.monotonic() + 10
    while True:
        view = mesh.snapshot.clusters.get("svc")
        if view is not None and view.picker is not None and done(view.picker.balancer.zone_plan):
            return
        assert time.monotonic() < deadline, "the zone-aware plan never changed as expected"
        time.sleep(0.05)


@pytest.fixture
def backends() -> Iterator[list[Backend]]:
    bs = [Backend() for _ in range(3)]
    servers = [UvicornThread(b).start() for b in bs]
    for b, s in zip(bs, servers, strict=True):
        b.port = s.port
    yield bs
    for s in servers:
        s.stop()


def test_local_cluster_from_bootstrap_steers_traffic(
    tmp_path: Path, backends: list[Backend]
) -> None:
    cp, cache = control_plane(tmp_path)
    cp.start()
    try:
        upstream = cla_zones(
            "svc",
            {
                "a": [("127.0.0.1", backends[0].port)],
                "b": [("127.0.0.1", b.port) for b in backends[1:]],
            },
        )
        svc = cluster("svc", common_lb_config={"zone_aware_lb_config": {"min_cluster_size": 1}})

        def install(me: Any) -> None:
            cache.install(
                svc,
                upstream,
                cluster("me"),
                me,
                routes("r", [("/", "svc", {})]),
                api_listener("svc.test:80", "r"),
            )

        # my service: 1 of 4 instances in my zone a (25%) < the upstream's 1 of 3: direct
        few_here = {
            "a": [("10.9.0.1", 80)],
            "b": [("10.9.0.2", 80), ("10.9.0.3", 80), ("10.9.0.4", 80)],
        }
        install(cla_zones("me", few_here))
        boot = cp.bootstrap()
        boot["node"]["locality"] = {"region": "r", "zone": "a"}
        boot["cluster_manager"] = {"local_cluster_name": "me"}
        with Mesh(boot) as mesh, mesh.httpx_client(timeout=5) as client:
            client.get("http://svc.test:80/")
            wait_for_plan(mesh, lambda plan: plan is not None and plan.direct)
            hits = collections.Counter(
                int(client.get("http://svc.test:80/").text) for _ in range(60)
            )
            assert hits == {backends[0].port: 60}
            # my service grows in zone a (3 of 4 = 75%): keep 33/75 = 44% local, spill to b
            many_here = {
                "a": [("10.9.0.1", 80), ("10.9.0.5", 80), ("10.9.0.6", 80)],
                "b": [("10.9.0.2", 80)],
            }
            install(cla_zones("me", many_here))
            wait_for_plan(mesh, lambda plan: plan is not None and not plan.direct)
            hits = collections.Counter(
                int(client.get("http://svc.test:80/").text) for _ in range(300)
            )
            assert set(hits) == {b.port for b in backends}
            assert 0.3 < hits[backends[0].port] / 300 < 0.6
    finally:
        cp.stop()
