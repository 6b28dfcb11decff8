"""Host selection under the previous_hosts retry predicate (Envoy's
host_selection_retry_max_attempts) and the EDS drop draw, at the cluster layer with real
balancers, and end to end through the httpx transport over the real control plane."""

from __future__ import annotations

import collections
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshlib import Call, Mesh, NoHealthyUpstream
from meshlib._errors import RequestDropped
from meshlib._snapshot import ClusterView, LiveBalancer
from meshlib.balancing import LocalityGroup
from meshlib.cluster import EndpointState
from tests.meshlib.cluster_xds import Backend, api_listener, cla, cluster, control_plane, routes
from tests.support import UvicornThread
from xds_client.resources import Endpoint, LbConfig
from xds_client.resources.endpoints import DropOverload

CALL = Call("svc:80", "GET", "/")


def view(n: int, policy: str = "RANDOM", drops: tuple[DropOverload, ...] = ()) -> ClusterView:
    eps = tuple(EndpointState("c", Endpoint("127.0.0.1", 9000 + i)) for i in range(n))
    live = LiveBalancer([LocalityGroup(1, 0, eps)], LbConfig(policy=policy))
    return ClusterView("c", None, eps, live, drops=drops)


def landed_on_tried(reselections: int, picks: int = 2000) -> int:
    v = view(2)
    tried = v.endpoints[0]
    return sum(
        v.pick(CALL, exclude=(tried,), reselections=reselections) is tried for _ in range(picks)
    )


def test_one_reselection_by_default_lets_a_retry_land_on_the_tried_host() -> None:
    # RANDOM over two hosts, one tried: two selections both land on it with p = 1/4
    # (2,000 picks: mean 500, sd 19; bounds at about 5 sd)
    assert 400 <= landed_on_tried(1) <= 600


def test_five_reselections_nearly_never_land_on_the_tried_host() -> None:
    # six selections all on the tried host: p = 1/64 (mean 31, sd 5.5)
    assert 4 <= landed_on_tried(5) <= 60


def test_without_previous_hosts_a_retry_may_go_anywhere() -> None:
    v = view(2)
    counts = collections.Counter(v.pick(CALL) for _ in range(2000))
    assert all(800 <= c <= 1200 for c in counts.values()) and len(counts) == 2


def test_out_of_reselections_the_last_selected_host_is_used() -> None:
    v = view(1)
    only = v.endpoints[0]
    # a huge configured bound is capped: the pick ends instead of spinning
    assert v.pick(CALL, exclude=(only,), reselections=10**9) is only


def test_ejected_hosts_are_skipped_without_spending_reselections() -> None:
    v = view(2, policy="ROUND_ROBIN")
    a, b = v.endpoints
    a.ejected = True  # the balancer was not rebuilt: the pick itself must skip it
    assert all(v.pick(CALL) is b for _ in range(10))
    # b was tried and a is ejected: b is re-selected, then used
    assert v.pick(CALL, exclude=(b,)) is b
    b.ejected = True
    with pytest.raises(NoHealthyUpstream):
        v.pick(CALL)


def test_drop_overloads_draw_each_category_in_turn() -> None:
    rng = random.Random(7).random
    half = view(1, drops=(DropOverload("lb", 0.5),))
    dropped = 0
    for _ in range(4000):
        try:
            half.check_drop("svc:80", rng)
        except RequestDropped as exc:
            assert (exc.category, exc.reason, exc.cluster) == ("lb", "drop_overload", "c")
            dropped += 1
    assert 1800 <= dropped <= 2200  # mean 2,000, sd 32
    two = view(1, drops=(DropOverload("first", 0.5), DropOverload("second", 0.5)))
    by: collections.Counter[str] = collections.Counter()
    for _ in range(4000):
        try:
            two.check_drop("svc:80", rng)
        except RequestDropped as exc:
            by[exc.category] += 1
    assert 1800 <= by["first"] <= 2200 and 850 <= by["second"] <= 1150  # 1/2, then 1/4
    view(1, drops=(DropOverload("none", 0.0),)).check_drop()
    with pytest.raises(RequestDropped):
        view(1, drops=(DropOverload("all", 1.0),)).check_drop()


# -- end to end: retries over the httpx transport --------------------------------------
PREDICATE = [{"name": "envoy.retry_host_predicates.previous_hosts"}]


@pytest.fixture
def two_backends(tmp_path: Path) -> Iterator[tuple[Any, list[Backend]]]:
    backends = [Backend(503), Backend(200)]
    servers = [UvicornThread(b).start() for b in backends]
    for b, s in zip(backends, servers, strict=True):
        b.port = s.port
    cp, cache = control_plane(tmp_path)
    cp.start()
    ports = [s.port for s in servers]
    entries = []
    for attempts in (1, 5):
        policy = {
            "retry_on": "5xx",
            "num_retries": 1,
            "retry_back_off": {"base_interval": "0.001s"},
            "retry_host_predicate": PREDICATE,
            "host_selection_retry_max_attempts": attempts,
        }
        entries.append((f"/r{attempts}", f"r{attempts}", {"retry_policy": policy}))
    clusters = [cluster(f"r{a}", lb_policy="RANDOM") for a in (1, 5)]
    cache.install(
        *clusters,
        *(cla(c.name, ports) for c in clusters),
        routes("r", entries),
        api_listener("svc.test:80", "r"),
    )
    yield cp, backends
    cp.stop()
    for s in servers:
        s.stop()


def test_host_selection_retry_max_attempts_end_to_end(
    two_backends: tuple[Any, list[Backend]],
) -> None:
    """One backend answers 503, the other 200; retry once with previous_hosts. A call
    ends in 503 only when the first try and every selection for the retry hit the 503
    backend: p = 1/2 x 1/4 with max attempts 1, 1/2 x 1/64 with 5 (300 calls each)."""
    cp, backends = two_backends
    with Mesh(cp.bootstrap()) as mesh, mesh.httpx_client(timeout=10) as client:
        failed = {
            a: sum(client.get(f"http://svc.test/r{a}").status_code == 503 for _ in range(300))
            for a in (1, 5)
        }
    assert 15 <= failed[1] <= 65, failed  # mean 37.5, sd 5.7
    assert failed[5] <= 14, failed  # mean 2.3, sd 1.5
    # a call whose first try met the 503 backend was retried once, the others not
    retries = backends[0].hits + backends[1].hits - 600
    assert 240 <= retries <= 360, retries  # mean 300, sd 12
