"""Aggregate clusters: the cluster tree, the linearized priority load (Envoy's rule over
the children's levels) and picks delegated to the chosen child's own balancer."""

from __future__ import annotations

import collections
import random

import pytest

from meshlib import Call
from meshlib._errors import NoHealthyUpstream
from meshlib._snapshot import ClusterView, LiveBalancer
from meshlib.balancing import Balancer, LevelHealth, LocalityGroup, priority_loads
from meshlib.cluster import (
    MAX_DEPTH,
    AggregateBalancer,
    AggregateView,
    Child,
    EndpointState,
    cluster_tree,
)
from xds_client.resources import ClusterResource, Endpoint, LbConfig

CALL = Call("svc:80", "GET", "/")
_ports = iter(range(20000, 60000))


def child(
    name: str,
    *levels: tuple[int, int],
    policy: str = "ROUND_ROBIN",
    panic: float = 50.0,
    factor: float = 1.4,
) -> Child:
    """A leaf cluster whose priority ``p`` has ``levels[p] = (healthy, unhealthy)`` hosts."""
    groups = []
    for priority, (healthy, unhealthy) in enumerate(levels):
        states = tuple(
            EndpointState(name, Endpoint("127.0.0.1", next(_ports), 1, health))
            for health in ["HEALTHY"] * healthy + ["UNHEALTHY"] * unhealthy
        )
        groups.append(LocalityGroup(1, priority, states, ("", "z", "")))
    resource = ClusterResource(
        name, name, lb=LbConfig(policy=policy), healthy_panic_threshold=panic
    )
    live = LiveBalancer(groups, resource.lb, factor, panic)
    states = tuple(e for g in groups for e in g.endpoints)
    return Child(ClusterView(name, resource, states, live), tuple(groups), factor)


def view_of(*children: Child, panic: float = 50.0, seed: int = 7) -> AggregateView:
    balancer = AggregateBalancer(children, panic, rng=random.Random(seed))
    endpoints = tuple(e for c in children for e in c.view.endpoints)
    return AggregateView("agg", ClusterResource("agg", ""), endpoints, None, aggregate=balancer)


def shares(view: AggregateView, n: int = 2000) -> collections.Counter[str]:
    return collections.Counter(view.pick(CALL).cluster for _ in range(n))


# -- priority_loads ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("levels", "threshold", "loads", "panic"),
    [
        pytest.param([(4, 4, 140), (4, 4, 140)], 50, [100, 0], [False, False], id="healthy"),
        pytest.param([(4, 2, 140), (4, 4, 140)], 50, [70, 30], [False, False], id="half"),
        # P0 below the threshold, but the normalized total is 100: no level panics.
        pytest.param([(4, 0, 140), (4, 4, 140)], 50, [0, 100], [False, False], id="gone"),
        pytest.param([(4, 2, 200), (4, 4, 140)], 50, [100, 0], [False, False], id="factor"),
        # Both mostly down: every level below the threshold: total panic, by host count.
        pytest.param([(10, 2, 140), (10, 2, 140)], 50, [50, 50], [True, True], id="both-low"),
        pytest.param([(2, 0, 140), (5, 2, 140)], 50, [29, 71], [True, True], id="all-panic"),
        # Total panic (14 + 28 < 50): loads follow host counts.
        pytest.param([(10, 1, 140), (30, 6, 140)], 50, [25, 75], [True, True], id="total"),
        pytest.param([(4, 0, 140), (4, 0, 140)], 0, [0, 0], [False, False], id="no-panic"),
        pytest.param([(4, 1, 140), (4, 2, 140), (4, 4, 140)], 50, [35, 65, 0], None, id="3"),
    ],
)
def test_priority_loads_follow_envoys_rule(
    levels: list[tuple[int, int, int]],
    threshold: float,
    loads: list[int],
    panic: list[bool] | None,
) -> None:
    got = priority_loads([LevelHealth(h, a, 0, f) for h, a, f in levels], threshold)
    assert list(got.healthy) == loads
    assert got.degraded == (0,) * len(levels)
    if panic is not None:
        assert list(got.panic) == panic


def test_aggregate_of_one_child_loads_like_the_childs_balancer() -> None:
    # One child's levels, linearized by the aggregate, get the loads and panic flags its
    # own Balancer gives them.
    rng = random.Random(5)
    for _ in range(300):
        shape = [(rng.randint(0, 6), rng.randint(0, 6)) for _ in range(rng.randint(1, 4))]
        shape = [(h, u) if h + u else (1, 0) for h, u in shape]
        threshold = rng.choice([0.0, 20.0, 50.0, 80.0])
        factor = rng.choice([1.0, 1.4, 2.0])
        c = child("c", *shape, panic=threshold, factor=factor)
        balancer = Balancer(
            c.groups, LbConfig(), overprovisioning_factor=factor, panic_threshold=threshold
        )
        aggregate = AggregateBalancer([c], threshold)
        got = [(load, panic) for _, _, load, panic in aggregate.loads]
        assert got == list(zip(balancer.loads, balancer.panic, strict=True)), shape


# -- the aggregate balancer -------------------------------------------------------------
def test_healthy_primary_takes_everything() -> None:
    view = view_of(child("primary", (3, 0)), child("secondary", (3, 0)))
    assert view.aggregate is not None
    assert view.aggregate.loads == [("primary", 0, 100, False), ("secondary", 0, 0, False)]
    assert shares(view, 300) == {"primary": 300}


def test_half_healthy_primary_spills_thirty_percent() -> None:
    # 50% available x 1.4 = 70% health: 70% stays, 30% goes to the secondary.
    view = view_of(child("primary", (2, 2)), child("secondary", (2, 0)))
    counts = shares(view, 4000)
    assert abs(counts["primary"] - 2800) < 4 * (4000 * 0.7 * 0.3) ** 0.5
    primary = {e for e in view.endpoints if e.cluster == "primary" and e.endpoint.usable}
    picked = {view.pick(CALL) for _ in range(200)}
    assert {e for e in picked if e.cluster == "primary"} == primary  # only healthy ones


def test_primary_gone_sends_everything_to_the_secondary() -> None:
    for primary in (child("primary", (0, 3)), child("primary")):  # unhealthy; no endpoints
        view = view_of(primary, child("secondary", (2, 0)))
        assert shares(view, 200) == {"secondary": 200}


def test_children_priorities_are_linearized_in_order() -> None:
    view = view_of(child("primary", (0, 2), (2, 0)), child("secondary", (2, 0), (2, 0)))
    assert view.aggregate is not None
    assert [(c, p, load) for c, p, load, _ in view.aggregate.loads] == [
        ("primary", 0, 0),
        ("primary", 1, 100),
        ("secondary", 0, 0),
        ("secondary", 1, 0),
    ]
    assert {e.endpoint.usable for e in (view.pick(CALL) for _ in range(50))} == {True}
    assert {view.pick(CALL).endpoint.port for _ in range(50)} == {
        e.endpoint.port for e in view.aggregate.children[0].groups[1].endpoints
    }


def test_both_degraded_split_and_each_child_panics() -> None:
    # 1 of 5 available in each: health 28 each, total 56 >= 50: 50/50; every level is
    # below the panic threshold, so each child balances over all its hosts.
    view = view_of(child("primary", (1, 4)), child("secondary", (1, 4)))
    assert view.aggregate is not None
    assert [(load, panic) for _, _, load, panic in view.aggregate.loads] == [
        (50, True),
        (50, True),
    ]
    picked = [view.pick(CALL) for _ in range(2000)]
    counts = collections.Counter(e.cluster for e in picked)
    assert abs(counts["primary"] - 1000) < 4 * (2000 * 0.25) ** 0.5
    assert len({e.endpoint.port for e in picked}) == 10  # unhealthy hosts too (panic)


def test_total_panic_follows_host_counts() -> None:
    view = view_of(child("primary", (0, 2)), child("secondary", (0, 6)))
    assert view.aggregate is not None
    assert [load for _, _, load, _ in view.aggregate.loads] == [25, 75]


def test_aggregate_panic_threshold_zero_fails_when_nothing_is_available() -> None:
    view = view_of(child("primary", (0, 2)), child("secondary", (0, 2)), panic=0)
    with pytest.raises(NoHealthyUpstream) as err:
        view.pick(CALL)
    assert err.value.cluster == "agg"


def test_ejections_in_a_child_move_the_load() -> None:
    primary, secondary = child("primary", (2, 0)), child("secondary", (2, 0))
    view = view_of(primary, secondary)
    assert shares(view, 50) == {"primary": 50}
    for e in primary.view.endpoints:
        e.ejected = True
    assert primary.view.picker is not None
    primary.view.picker.rebuild()  # what the outlier sweeper does after an ejection
    assert shares(view, 50) == {"secondary": 50}
    for e in primary.view.endpoints:
        e.ejected = False
    primary.view.picker.rebuild()
    assert shares(view, 50) == {"primary": 50}


def test_an_ejection_before_the_child_rebuild_still_fails_over() -> None:
    # The outlier detector ejects at once; the child's balancer is rebuilt later, on the
    # sweeper's thread. A pick meanwhile rebuilds the loads from the current state.
    primary = child("primary", (2, 0))
    view = view_of(primary, child("secondary", (2, 0)))
    assert shares(view, 10) == {"primary": 10}
    for e in primary.view.endpoints:
        e.ejected = True
    assert shares(view, 20) == {"secondary": 20}


def test_pick_returns_the_child_state_and_honours_exclude() -> None:
    primary = child("primary", (2, 0))
    view = view_of(primary, child("secondary", (2, 0)))
    first = view.pick(CALL)
    assert first.cluster == "primary" and first in primary.view.endpoints
    for _ in range(20):
        assert view.pick(CALL, exclude={first}, reselections=5) is not first


def test_child_policy_and_hash_key_are_the_childs() -> None:
    view = view_of(child("primary", (8, 0), policy="RING_HASH"), child("secondary", (2, 0)))
    for key in (1, 99, 12345):
        assert len({view.pick(CALL, hash_key=key) for _ in range(10)}) == 1


def test_no_children_is_no_healthy_upstream_naming_the_aggregate() -> None:
    view = AggregateView("agg", None, (), None, "aggregate cluster loop: agg -> agg")
    with pytest.raises(NoHealthyUpstream, match=r"agg: no healthy upstream.*loop") as err:
        view.pick(CALL)
    assert err.value.cluster == "agg" and err.value.reason == "no_healthy_upstream"


# -- the cluster tree -------------------------------------------------------------------
def agg(name: str, *children: str) -> ClusterResource:
    return ClusterResource(name, "", discovery_type="AGGREGATE", aggregate_clusters=children)


def leaf(name: str) -> ClusterResource:
    return ClusterResource(name, name)


def test_tree_flattens_nested_aggregates_depth_first_once() -> None:
    world = {
        "top": agg("top", "a", "mid", "b"),
        "mid": agg("mid", "c", "a", "d"),
        "a": leaf("a"),
        "b": leaf("b"),
        "c": leaf("c"),
        "d": leaf("d"),
    }
    tree = cluster_tree("top", world.get)
    assert tree.leaves == ("a", "c", "d", "b") and tree.error == ""
    assert set(tree.clusters) == set(world)


def test_tree_stops_at_unknown_clusters() -> None:
    tree = cluster_tree("top", {"top": agg("top", "a", "later"), "a": leaf("a")}.get)
    assert tree.clusters == ("top", "a", "later") and tree.leaves == ("a",)


@pytest.mark.parametrize(
    "world",
    [
        {"top": agg("top", "a", "top"), "a": leaf("a")},
        {"top": agg("top", "x"), "x": agg("x", "y"), "y": agg("y", "top")},
    ],
    ids=["self", "cycle"],
)
def test_tree_with_a_loop_is_an_error(world: dict[str, ClusterResource]) -> None:
    assert cluster_tree("top", world.get).error.startswith("aggregate cluster loop: top -> ")


def test_tree_depth_is_limited() -> None:
    def chain(levels: int) -> dict[str, ClusterResource]:
        world = {f"c{i}": agg(f"c{i}", f"c{i + 1}") for i in range(levels - 1)}
        world[f"c{levels - 1}"] = leaf(f"c{levels - 1}")
        return world

    ok = cluster_tree("c0", chain(MAX_DEPTH).get)
    assert ok.error == "" and ok.leaves == (f"c{MAX_DEPTH - 1}",)
    deep = cluster_tree("c0", chain(MAX_DEPTH + 1).get)
    assert "deeper than 16" in deep.error
