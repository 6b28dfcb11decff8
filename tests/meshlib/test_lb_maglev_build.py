"""MAGLEV table build: the fast build gives exactly the table of Envoy's plain loop."""

from __future__ import annotations

import collections
import random
from collections.abc import Sequence

import pytest

from meshlib.balancing import xxhash64
from meshlib.balancing.maglev import build_table
from meshlib.balancing.ring_hash import normalized_weights
from meshlib.cluster import EndpointState
from xds_client.resources import Endpoint


def states(*weights: int) -> list[EndpointState]:
    return [EndpointState("c", Endpoint("127.0.0.1", 9000 + i, w)) for i, w in enumerate(weights)]


def reference_table(eps: Sequence[EndpointState], weights: Sequence[float], size: int) -> list[int]:
    """Envoy's MaglevTable construction, step by step (the oracle)."""
    offsets = [xxhash64(e.address, 0) % size for e in eps]
    skips = [xxhash64(e.address, 1) % (size - 1) + 1 for e in eps]
    nexts = [0] * len(eps)
    targets = [0.0] * len(eps)
    max_weight = max(weights)
    table = [-1] * size
    filled, iteration = 0, 1
    while filled < size:
        for i in range(len(eps)):
            if filled == size:
                break
            if iteration * weights[i] < targets[i]:
                continue
            targets[i] += max_weight
            slot = (offsets[i] + skips[i] * nexts[i]) % size
            while table[slot] >= 0:
                nexts[i] += 1
                slot = (offsets[i] + skips[i] * nexts[i]) % size
            table[slot] = i
            nexts[i] += 1
            filled += 1
        iteration += 1
    return table


def indices(eps: Sequence[EndpointState], table: Sequence[EndpointState]) -> list[int]:
    position = {id(e): i for i, e in enumerate(eps)}
    return [position[id(e)] for e in table]


def test_pinned_entries_and_shares_of_the_default_table() -> None:
    eps = states(1, 1, 2)
    table = indices(eps, build_table(eps, [0.25, 0.25, 0.5], 65_537))
    assert table[:12] == [1, 2, 2, 1, 1, 1, 1, 2, 1, 1, 1, 1]
    assert [table[1000], table[30000], table[65536]] == [2, 2, 1]
    assert collections.Counter(table) == {2: 32767, 1: 16385, 0: 16385}
    assert indices(eps, build_table(eps, [0.25, 0.25, 0.5], 7)) == [0, 1, 2, 2, 1, 0, 2]


def test_default_size_with_many_unequal_endpoints_matches_envoy_loop() -> None:
    rng = random.Random(11)
    eps = states(*(rng.randint(1, 100) for _ in range(60)))
    weights = normalized_weights(eps)
    assert indices(eps, build_table(eps, weights, 65_537)) == reference_table(eps, weights, 65_537)


@pytest.mark.parametrize("size", [2, 7, 307, 5_011])
@pytest.mark.parametrize(
    "shape",
    [
        "equal",
        "random",
        "one-heavy",
        "one-light",
        "near-equal-floats",
        "near-max-skewed",
        "zero-weight",
    ],
)
def test_fast_build_equals_envoy_loop(size: int, shape: str) -> None:
    rng = random.Random(f"{size}-{shape}")
    for n in (1, 2, 3, 10, 40):
        eps = states(*([1] * n))
        if shape == "equal":
            weights = normalized_weights(eps)
        elif shape == "random":
            weights = [rng.randint(1, 100) / 7.0 for _ in range(n)]
        elif shape == "one-heavy":
            weights = [1.0] * (n - 1) + [float(n * 10)]
        elif shape == "one-light":
            weights = [1.0] * (n - 1) + [0.1]
        elif shape == "near-equal-floats":  # weights a few ulps apart: the float edge
            weights = [0.1 * (1 + k * 2**-50) for k in range(n)]
        elif shape == "near-max-skewed":  # the same edge among a few heavy endpoints
            weights = [0.1 * (1 + k * 2**-50) for k in range(min(n, 3))] + [0.001] * (n - 3)
        else:
            weights = [0.0] + [float(rng.randint(1, 5)) for _ in range(n - 2)] + [50.0][: n - 1]
        got = indices(eps, build_table(eps, weights, size))
        assert got == reference_table(eps, weights, size), (n, weights)


def test_shares_follow_weights() -> None:
    eps = states(1, 2, 3, 4)
    table = build_table(eps, normalized_weights(eps), 5_011)
    counts = collections.Counter(e.address for e in table)
    for i, e in enumerate(eps):
        assert abs(counts[e.address] / 5_011 - (i + 1) / 10) < 0.01


def test_table_size_must_be_prime() -> None:
    with pytest.raises(ValueError, match="table_size must be a prime number, got 1000"):
        build_table(states(1, 1), [0.5, 0.5], 1000)
