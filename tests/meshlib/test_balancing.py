"""Round robin, random, least request, peak EWMA, pick first: statistical and exact checks."""

from __future__ import annotations

import collections
import itertools
import random

import pytest

from meshlib import Call
from meshlib.balancing import (
    LeastRequestPicker,
    PeakEwmaPicker,
    PickFirstPicker,
    RandomPicker,
    RoundRobinPicker,
)
from meshlib.balancing.round_robin import smooth_schedule
from meshlib.cluster import EndpointState
from xds_client.resources import Endpoint, LbConfig

CALL = Call("svc:80", "GET", "/")
# chi-square critical values at p = 0.001, by degrees of freedom
CHI2_999 = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52, 7: 24.32, 9: 27.88}


def states(*weights: int) -> list[EndpointState]:
    return [EndpointState("c", Endpoint("127.0.0.1", 9000 + i, w)) for i, w in enumerate(weights)]


def chi2(counts: collections.Counter[str], expected: dict[str, float]) -> float:
    return sum((counts[k] - e) ** 2 / e for k, e in expected.items())


def test_smooth_schedule_interleaves_heavy_endpoints() -> None:
    assert smooth_schedule([5, 1, 1]) == [0, 0, 0, 1, 2, 0, 0]
    assert smooth_schedule([1, 1, 1]) == [0, 1, 2]
    assert smooth_schedule([2, 2]) == [0, 1]  # reduced by gcd


def test_round_robin_equal_weights_spread_exactly() -> None:
    picker = RoundRobinPicker(states(1, 1, 1))
    counts = collections.Counter(p.address for _ in range(300) if (p := picker.pick(CALL)))
    assert sorted(counts.values()) == [100, 100, 100]


def test_round_robin_weights_exact_per_cycle_and_not_bursty() -> None:
    picker = RoundRobinPicker(states(3, 1), rng=random.Random(1))
    seq = [p.address for _ in range(400) if (p := picker.pick(CALL))]
    assert collections.Counter(seq) == {"127.0.0.1:9000": 300, "127.0.0.1:9001": 100}
    # smooth: the light endpoint never waits more than one cycle (4 picks)
    gaps = [i for i, a in enumerate(seq) if a == "127.0.0.1:9001"]
    assert max(b - a for a, b in itertools.pairwise(gaps)) == 4


def test_empty_set_picks_nothing() -> None:
    for cls in (RoundRobinPicker, RandomPicker, LeastRequestPicker, PeakEwmaPicker):
        assert cls([]).pick(CALL) is None


def test_random_is_uniform_and_ignores_weights() -> None:
    picker = RandomPicker(states(5, 1, 1, 1), rng=random.Random(7))
    n = 8000
    counts = collections.Counter(p.address for _ in range(n) if (p := picker.pick(CALL)))
    expected = {f"127.0.0.1:{9000 + i}": n / 4 for i in range(4)}
    assert chi2(counts, expected) < CHI2_999[3]


def test_least_request_equal_weights_prefers_fewer_active() -> None:
    eps = states(1, 1, 1, 1)
    eps[0].active_requests = 10
    eps[1].active_requests = 5
    picker = LeastRequestPicker(eps, LbConfig("LEAST_REQUEST"), random.Random(3))
    n = 4000
    counts = collections.Counter(p.address for _ in range(n) if (p := picker.pick(CALL)))
    # P2C with replacement: the busiest endpoint only wins when drawn twice (1/16)
    expected = {
        "127.0.0.1:9000": n / 16,
        "127.0.0.1:9001": n * 3 / 16,
        "127.0.0.1:9002": n * 6 / 16,
        "127.0.0.1:9003": n * 6 / 16,
    }
    assert chi2(counts, expected) < CHI2_999[3]


def test_least_request_choice_count_sharpens() -> None:
    eps = states(1, 1, 1, 1)
    for i, e in enumerate(eps):
        e.active_requests = i
    five = LeastRequestPicker(eps, LbConfig("LEAST_REQUEST", choice_count=5), random.Random(3))
    two = LeastRequestPicker(eps, LbConfig("LEAST_REQUEST", choice_count=2), random.Random(3))
    n = 2000
    best5 = sum(1 for _ in range(n) if five.pick(CALL) is eps[0])
    best2 = sum(1 for _ in range(n) if two.pick(CALL) is eps[0])
    # P(least drawn at least once): 1 - (3/4)^5 = 0.763 vs 1 - (3/4)^2 = 0.4375
    assert abs(best5 / n - 0.763) < 0.05 and abs(best2 / n - 0.4375) < 0.05


def test_least_request_weighted_uses_bias() -> None:
    eps = states(3, 1)
    eps[0].active_requests = 8  # score 3/9 = 0.33 vs 1/1
    biased = LeastRequestPicker(eps, LbConfig("LEAST_REQUEST"), random.Random(5))
    flat = LeastRequestPicker(
        eps, LbConfig("LEAST_REQUEST", active_request_bias=0.0), random.Random(5)
    )
    n = 2000
    heavy_biased = sum(1 for _ in range(n) if biased.pick(CALL) is eps[0])
    heavy_flat = sum(1 for _ in range(n) if flat.pick(CALL) is eps[0])
    # Envoy's EDF over effective weights: bias 1 gives 3/9 against 1, a share of 1/4;
    # bias 0 is weighted round robin, 3/4
    assert abs(heavy_biased / n - 0.25) < 0.01
    assert abs(heavy_flat / n - 0.75) < 0.01


def test_peak_ewma_prefers_fast_and_reacts_to_a_spike() -> None:
    eps = states(1, 1)
    eps[0].ewma, eps[1].ewma = 0.010, 0.100
    picker = PeakEwmaPicker(eps, LbConfig("PEAK_EWMA"), random.Random(2))
    assert all(picker.pick(CALL) is eps[0] for _ in range(50))
    eps[0]._observe_latency(0.5, now=1.0)  # a slow sample counts at once (peak)
    assert eps[0].ewma == 0.5
    assert all(picker.pick(CALL) is eps[1] for _ in range(50))
    eps[0]._observe_latency(0.01, now=1.0 + 10.0)  # then decays with decay_time (10 s)
    assert eps[0].ewma == pytest.approx(0.5 * 0.3679 + 0.01 * 0.6321, rel=1e-3)


def test_peak_ewma_counts_active_requests() -> None:
    eps = states(1, 1)
    eps[0].ewma = eps[1].ewma = 0.02
    eps[0].active_requests = 3
    picker = PeakEwmaPicker(eps, LbConfig("PEAK_EWMA"), random.Random(2))
    assert all(picker.pick(CALL) is eps[1] for _ in range(20))


def test_pick_first_and_its_reselection() -> None:
    eps = states(1, 1, 1)
    picker = PickFirstPicker(eps)
    assert {picker.pick(CALL) for _ in range(10)} == {eps[0]}
    assert picker.pick(CALL, attempt=1) is eps[1]
    shuffled = {
        PickFirstPicker(eps, LbConfig("PICK_FIRST", shuffle_address_list=True), random.Random(s))
        .pick(CALL)
        .address  # type: ignore[union-attr]
        for s in range(20)
    }
    assert len(shuffled) == 3
