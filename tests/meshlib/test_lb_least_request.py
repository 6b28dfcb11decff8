"""LEAST_REQUEST as Envoy does it: P2C for equal weights, EDF over load-scaled weights."""

from __future__ import annotations

import collections
import itertools
import random
import threading

from meshlib import Call
from meshlib.balancing import LeastRequestPicker
from meshlib.cluster import EndpointState
from xds_client.resources import Endpoint, LbConfig

CALL = Call("svc:80", "GET", "/")
# chi-square critical values at p = 0.001, by degrees of freedom
CHI2_999 = {2: 13.82, 3: 16.27}


def states(*weights: int) -> list[EndpointState]:
    return [EndpointState("c", Endpoint("127.0.0.1", 9000 + i, w)) for i, w in enumerate(weights)]


def shares(picker: LeastRequestPicker, eps: list[EndpointState], n: int) -> list[float]:
    counts = collections.Counter(picker.pick(CALL) for _ in range(n))
    return [counts[e] / n for e in eps]


def test_equal_weights_p2c_starves_a_busy_host() -> None:
    eps = states(1, 1, 1)
    eps[0].active_requests = 50
    picker = LeastRequestPicker(eps, LbConfig("LEAST_REQUEST"), random.Random(1))
    n = 6000
    counts = collections.Counter(picker.pick(CALL) for _ in range(n))
    # the busy host wins only when both draws are it: 1/9; the others split the rest
    expected = {eps[0]: n / 9, eps[1]: n * 4 / 9, eps[2]: n * 4 / 9}
    stat = sum((counts[e] - x) ** 2 / x for e, x in expected.items())
    assert stat < CHI2_999[2]


def test_unequal_weights_idle_shares_proportional_and_smooth() -> None:
    eps = states(1, 2, 3, 4)
    picker = LeastRequestPicker(eps, LbConfig("LEAST_REQUEST"), random.Random(2))
    seq = [picker.pick(CALL) for _ in range(1000)]
    counts = collections.Counter(seq)
    # a deterministic schedule: within one pick per endpoint of exact proportion
    for i, e in enumerate(eps):
        assert abs(counts[e] - 100 * (i + 1)) <= 1
    # smooth, not bursty: the heaviest never runs more than twice in a row
    runs = max(len(list(g)) for k, g in itertools.groupby(seq) if k is eps[3])
    assert runs <= 2


def test_bias_zero_is_weighted_round_robin_ignoring_load() -> None:
    eps = states(3, 1)
    eps[0].active_requests = 100
    picker = LeastRequestPicker(
        eps, LbConfig("LEAST_REQUEST", active_request_bias=0.0), random.Random(3)
    )
    assert [round(s, 2) for s in shares(picker, eps, 4000)] == [0.75, 0.25]


def test_bias_one_divides_a_loaded_heavy_hosts_weight_by_its_load() -> None:
    eps = states(4, 1, 1)
    eps[0].active_requests = 3  # effective weight 4 / (3 + 1) = 1, as the light ones
    picker = LeastRequestPicker(eps, LbConfig("LEAST_REQUEST"), random.Random(4))
    got = shares(picker, eps, 3000)
    assert all(abs(s - 1 / 3) < 0.005 for s in got)  # from 4/6 of the picks to 1/3
    eps[0].active_requests = 0  # idle again: it takes its full weight back
    got = shares(picker, eps, 3000)
    assert abs(got[0] - 4 / 6) < 0.005


def test_fractional_bias_uses_the_power() -> None:
    eps = states(4, 1)
    eps[0].active_requests = 15  # 4 / 16 ** 0.5 = 1
    picker = LeastRequestPicker(
        eps, LbConfig("LEAST_REQUEST", active_request_bias=0.5), random.Random(5)
    )
    assert [round(s, 2) for s in shares(picker, eps, 2000)] == [0.5, 0.5]


def test_weight_is_taken_at_pick_time_as_requests_start_and_finish() -> None:
    # requests that stay open: each pick adds one to the chosen host, as a real caller does
    eps = states(2, 1)
    picker = LeastRequestPicker(eps, LbConfig("LEAST_REQUEST"), random.Random(6))
    for _ in range(300):
        chosen = picker.pick(CALL)
        assert chosen is not None
        chosen.active_requests += 1
    # host i's k-th reschedule is (k + 1) / w_i later, so its deadline after k picks is
    # about k^2 / (2 w_i): equal deadlines give k0 / k1 = sqrt(w0 / w1) = 1.41, where a
    # weight read once (or bias 0) would keep 2:1
    ratio = eps[0].active_requests / eps[1].active_requests
    assert 1.3 < ratio < 1.55


def test_start_point_is_seeded_and_varies() -> None:
    eps = states(5, 1, 1, 1)
    pickers = [LeastRequestPicker(eps, rng=random.Random(seed)) for seed in range(20)]
    firsts = {tuple(p.pick(CALL) for _ in range(3)) for p in pickers}
    assert len(firsts) > 1  # clients do not all start at the same point of the schedule
    again = [LeastRequestPicker(eps, rng=random.Random(7)).pick(CALL) for _ in range(2)]
    assert again[0] is again[1]


def test_weighted_picks_are_consistent_across_threads() -> None:
    eps = states(3, 1)
    picker = LeastRequestPicker(eps, LbConfig("LEAST_REQUEST"), random.Random(8))
    counts: collections.Counter[EndpointState | None] = collections.Counter()
    lock = threading.Lock()

    def work() -> None:
        local = collections.Counter(picker.pick(CALL) for _ in range(1000))
        with lock:
            counts.update(local)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counts[eps[0]] == 3000 and counts[eps[1]] == 1000
