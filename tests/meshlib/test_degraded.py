"""DEGRADED endpoints (Envoy): they take traffic only as spillover, after every priority's
healthy hosts, as if they were a lower priority. The rule, the balancer's picks, an
aggregate over degraded children, and requests through ``mesh.httpx_client()``."""

from __future__ import annotations

import collections
import math
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshlib import Call, Mesh
from meshlib._snapshot import ClusterView, LiveBalancer
from meshlib.admin import clusters_json
from meshlib.admin._views import snapshot_samples
from meshlib.balancing import Balancer, LevelHealth, LocalityGroup, priority_loads
from meshlib.cluster import Child, EndpointState
from meshlib.controlplane import ControlPlane
from tests.meshlib.cluster_xds import (
    Backend,
    FixedCache,
    api_listener,
    cla,
    cluster,
    control_plane,
    routes,
)
from tests.meshlib.test_aggregate import view_of
from tests.meshlib.test_cluster_e2e import port_of, wait_for
from tests.support import UvicornThread
from xds_client.resources import ClusterResource, Endpoint, LbConfig

CALL = Call("svc:80", "GET", "/")
_ports = iter(range(30000, 60000))


def level(priority: int, healthy: int, degraded: int = 0, unhealthy: int = 0) -> LocalityGroup:
    health = ["HEALTHY"] * healthy + ["DEGRADED"] * degraded + ["UNHEALTHY"] * unhealthy
    states = tuple(EndpointState("c", Endpoint("127.0.0.1", next(_ports), 1, h)) for h in health)
    return LocalityGroup(1, priority, states)


def within(count: int, n: int, p: float) -> bool:
    return abs(count - n * p) <= 4 * math.sqrt(n * p * (1 - p)) + 1


# -- the rule: Envoy's documented table (one priority, overprovisioning factor 1.4) ------
@pytest.mark.parametrize(
    ("healthy", "degraded", "unhealthy", "to_healthy", "to_degraded", "panic"),
    [
        (100, 0, 0, 100, 0, False),
        (71, 0, 29, 100, 0, False),
        (71, 29, 0, 99, 1, False),
        (25, 65, 10, 35, 65, False),
        (5, 0, 95, 100, 0, True),
    ],
)
def test_envoys_degraded_table(
    healthy: int, degraded: int, unhealthy: int, to_healthy: int, to_degraded: int, panic: bool
) -> None:
    hosts = healthy + degraded + unhealthy
    loads = priority_loads([LevelHealth(hosts, healthy, degraded, 140)], 50)
    assert (loads.healthy, loads.degraded, loads.panic) == ((to_healthy,), (to_degraded,), (panic,))


def test_degraded_hosts_rank_below_every_priority_s_healthy_hosts() -> None:
    # P0 25% healthy / 65% degraded / 10% unhealthy; P1 20% healthy: health 35 and 28,
    # P0 degraded 91; total 100. Healthy loads first (35, 28), then 37% to P0 degraded.
    loads = priority_loads([LevelHealth(20, 5, 13, 140), LevelHealth(20, 4, 0, 140)], 50)
    assert loads.healthy == (35, 28)
    assert loads.degraded == (37, 0)
    assert loads.panic == (False, False)
    # A healthy P1 takes everything the P0 healthy hosts cannot: degraded hosts idle.
    loads = priority_loads([LevelHealth(20, 5, 13, 140), LevelHealth(2, 2, 0, 140)], 50)
    assert (loads.healthy, loads.degraded) == ((35, 65), (0, 0))


def test_degraded_hosts_count_against_panic() -> None:
    # 1 healthy, 1 degraded of 4: 50% available is not below the threshold; 70% total.
    loads = priority_loads([LevelHealth(4, 1, 1, 140)], 50)
    assert (loads.healthy, loads.degraded, loads.panic) == ((50,), (50,), (False,))
    assert priority_loads([LevelHealth(4, 0, 1, 140)], 50).panic == (True,)
    assert priority_loads([LevelHealth(4, 0, 0, 140)], 0).healthy == (0,)


# -- the balancer ---------------------------------------------------------------------
def test_picks_follow_healthy_then_degraded_loads() -> None:
    p0, p1 = level(0, 5, 13, 2), level(1, 4, 0, 16)
    b = Balancer([p0, p1], rng=random.Random(3))
    assert (b.loads, b.degraded_loads) == ([35, 28], [37, 0])
    n = 6000
    picks = [b.pick(CALL) for _ in range(n)]
    kinds = collections.Counter(
        (e.endpoint.health, e in p0.endpoints) for e in picks if e is not None
    )
    assert sum(kinds.values()) == n
    assert within(kinds[("HEALTHY", True)], n, 0.35), kinds
    assert within(kinds[("HEALTHY", False)], n, 0.28), kinds
    assert within(kinds[("DEGRADED", True)], n, 0.37), kinds
    assert not any(e.endpoint.health == "UNHEALTHY" for e in picks if e is not None)


@pytest.mark.parametrize("policy", ["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH"])
def test_every_policy_spills_to_degraded_hosts(policy: str) -> None:
    g = level(0, 2, 2)
    b = Balancer([g], LbConfig(policy), rng=random.Random(1))
    n = 3000
    keys = random.Random(2)
    picked = [
        b.pick(CALL, keys.getrandbits(64) if policy == "RING_HASH" else None) for _ in range(n)
    ]
    degraded = sum(1 for e in picked if e is not None and e.endpoint.health == "DEGRADED")
    assert within(degraded, n, 0.30), (policy, degraded)


def test_an_ejected_degraded_host_is_unavailable() -> None:
    g = level(0, 1, 1)
    assert Balancer([g]).degraded_loads == [30]
    g.endpoints[1].ejected = True
    b = Balancer([g])
    assert (b.loads, b.degraded_loads, b.panic) == ([100], [0], [False])
    assert {b.pick(CALL) for _ in range(100)} == {g.endpoints[0]}


def test_only_degraded_hosts_take_everything_and_panic_still_uses_all() -> None:
    g = level(0, 0, 2, 1)  # 67% available (degraded): no panic
    assert {e.endpoint.health for e in (Balancer([g]).pick(CALL) for _ in range(200)) if e} == {
        "DEGRADED"
    }
    g = level(0, 0, 1, 9)  # 10% available: panic over every host
    picked = {Balancer([g]).pick(CALL) for _ in range(300)}
    assert len(picked) == 10


# -- aggregate clusters ---------------------------------------------------------------
def test_aggregate_sends_the_primarys_degraded_share_to_the_secondarys_healthy_hosts() -> None:
    # primary: 1 healthy + 1 degraded (health 70, degraded 70); secondary healthy (100).
    # Envoy linearizes: healthy loads 70 / 30, nothing left for degraded hosts; the level
    # chosen for the primary picks its healthy host only.
    primary_groups = (level(0, 1, 1),)
    secondary_groups = (level(0, 2),)

    def child(name: str, groups: tuple[LocalityGroup, ...]) -> Child:
        resource = ClusterResource(name, name, lb=LbConfig())
        live = LiveBalancer(groups, resource.lb)
        states = tuple(e for g in groups for e in g.endpoints)
        return Child(ClusterView(name, resource, states, live), groups)

    view = view_of(child("primary", primary_groups), child("secondary", secondary_groups))
    assert view.aggregate is not None
    loads = view.aggregate.priority_loads
    assert (loads.healthy, loads.degraded) == ((70, 30), (0, 0))
    n = 3000
    picked = collections.Counter(view.pick(CALL).endpoint.health for _ in range(n))
    assert picked["DEGRADED"] == 0
    # With the secondary gone, the primary's degraded host takes the 30% again.
    alone = view_of(child("primary", primary_groups))
    picked = collections.Counter(alone.pick(CALL).endpoint.health for _ in range(n))
    assert within(picked["DEGRADED"], n, 0.30), picked


# -- end to end -----------------------------------------------------------------------
DEGRADED, UNHEALTHY, HEALTHY = 5, 2, 1


@pytest.fixture
def control(tmp_path: Path) -> Iterator[tuple[list[int], ControlPlane, FixedCache]]:
    backends = [Backend(), Backend()]
    servers = [UvicornThread(b).start() for b in backends]
    for b, s in zip(backends, servers, strict=True):
        b.port = s.port
    cp, cache = control_plane(tmp_path)
    cp.start()
    yield [s.port for s in servers], cp, cache
    cp.stop()
    for s in servers:
        s.stop()


@pytest.mark.timeout(60)
def test_eds_degraded_endpoints_through_httpx(
    control: tuple[list[int], ControlPlane, FixedCache],
) -> None:
    ports, cp, cache = control

    def install(*health: int) -> None:
        assignment = cla("svc", ports)
        for lb, status in zip(assignment.endpoints[0].lb_endpoints, health, strict=True):
            lb.health_status = status
        cache.install(
            cluster("svc"),
            assignment,
            routes("r", [("/", "svc", {})]),
            api_listener("svc.test:80", "r"),
        )

    healthy, degraded = ports
    install(HEALTHY, DEGRADED)
    n = 400
    with Mesh(cp.bootstrap()) as mesh, mesh.httpx_client(timeout=5) as client:
        counts = collections.Counter(port_of(client.get("http://svc.test:80/")) for _ in range(n))
        assert set(counts) == {healthy, degraded}
        assert within(counts[degraded], n, 0.30), counts

        # The healthy endpoint turns unhealthy: the degraded one takes everything.
        install(UNHEALTHY, DEGRADED)
        wait_for(
            lambda: {port_of(client.get("http://svc.test:80/")) for _ in range(20)} == {degraded},
            "all traffic on the degraded endpoint",
        )
        view = mesh.snapshot.clusters["svc"]
        assert view.picker is not None
        assert (view.picker.balancer.loads, view.picker.balancer.degraded_loads) == ([0], [100])
        samples = {
            s.name: s.value for s in snapshot_samples(mesh) if ("cluster_name", "svc") in s.labels
        }
        assert samples["envoy_cluster_membership_degraded"] == 1
        assert samples["envoy_cluster_membership_healthy"] == 0
        statuses = clusters_json(mesh)["cluster_statuses"]
        svc = next(c for c in statuses if c["name"] == "svc")
        assert [h["degraded"] for h in svc["host_statuses"]] == [False, True]
