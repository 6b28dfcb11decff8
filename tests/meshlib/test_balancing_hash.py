"""RING_HASH and MAGLEV: hash functions, ring sizes, weights, stickiness, consistency."""

from __future__ import annotations

import collections
import random

import pytest

from meshlib import Call
from meshlib.balancing import MaglevPicker, RingHashPicker, murmur_hash2, xxhash64
from meshlib.balancing.maglev import build_table
from meshlib.cluster import EndpointState
from xds_client.resources import Endpoint, LbConfig

CALL = Call("svc:80", "GET", "/")


def states(*weights: int, base: int = 9000) -> list[EndpointState]:
    return [EndpointState("c", Endpoint("127.0.0.1", base + i, w)) for i, w in enumerate(weights)]


@pytest.mark.parametrize(
    ("data", "seed", "expected"),
    [  # published XXH64 test vectors
        (b"", 0, 0xEF46DB3751D8E999),
        (b"a", 0, 0xD24EC4F1A98C6E5B),
        (b"abc", 0, 0x44BC2CF5AD770999),
    ],
)
def test_xxhash64_vectors(data: bytes, seed: int, expected: int) -> None:
    assert xxhash64(data, seed) == expected


def test_hashes_cover_all_length_paths() -> None:
    # every tail length and the 32-byte stripe loop give distinct 64-bit values
    values = {xxhash64(b"k" * n) for n in range(70)} | {murmur_hash2(b"k" * n) for n in range(20)}
    assert len(values) == 90 and all(0 <= v < 2**64 for v in values)


@pytest.mark.parametrize(
    ("weights", "min_size", "max_size", "expected"),
    [
        ((1, 1, 1), 1024, 8_388_608, 1026),  # each host gets ceil(1024/3) entries
        ((1, 1), 1024, 8_388_608, 1024),
        ((1, 3), 1024, 8_388_608, 1024),
        ((1, 1, 1), 1024, 512, 512),  # capped at maximum_ring_size
        ((1, 99), 1024, 8_388_608, 1100),  # scale: ceil(0.01 x 1024) / 0.01
        ((1,), 4, 8, 4),
    ],
)
def test_ring_size_follows_envoy(
    weights: tuple[int, ...], min_size: int, max_size: int, expected: int
) -> None:
    cfg = LbConfig("RING_HASH", min_ring_size=min_size, max_ring_size=max_size)
    assert RingHashPicker(states(*weights), cfg).ring_size == expected


def test_ring_hash_is_sticky_and_weighted() -> None:
    eps = states(1, 2, 1)
    picker = RingHashPicker(eps)
    rng = random.Random(11)
    keys = [rng.getrandbits(64) for _ in range(4000)]
    first = [picker.pick(CALL, k) for k in keys]
    assert first == [picker.pick(CALL, k) for k in keys]  # the same key, the same endpoint
    counts = collections.Counter(e.address for e in first if e)
    share = counts["127.0.0.1:9001"] / len(keys)
    assert 0.40 < share < 0.60  # weight 2 of 4


def test_ring_hash_moves_only_the_removed_endpoints_keys() -> None:
    eps = states(1, 1, 1, 1)
    before = RingHashPicker(eps)
    after = RingHashPicker(eps[:3])
    rng = random.Random(5)
    keys = [rng.getrandbits(64) for _ in range(2000)]
    moved = [k for k in keys if before.pick(CALL, k) is not after.pick(CALL, k)]
    from_removed = [k for k in moved if before.pick(CALL, k) is eps[3]]
    assert len(from_removed) == sum(1 for k in keys if before.pick(CALL, k) is eps[3])
    # the others gain ring entries (342 instead of 256 each), which take some keys from
    # their neighbours; a modulo hash would move three quarters of all keys
    assert (len(moved) - len(from_removed)) / len(keys) < 0.15


def test_ring_hash_reselection_and_no_key() -> None:
    eps = states(1, 1)
    picker = RingHashPicker(eps, rng=random.Random(1))
    key = 12345
    assert {picker.pick(CALL, key, attempt) for attempt in range(8)} == set(eps)
    assert {picker.pick(CALL) for _ in range(50)} == set(eps)  # random point without a key


def test_maglev_table_is_balanced_and_weighted() -> None:
    eps = states(1, 1, 2)
    table = build_table(eps, [0.25, 0.25, 0.5], 65_537)
    counts = collections.Counter(e.address for e in table)
    assert len(table) == 65_537
    assert abs(counts["127.0.0.1:9002"] / 65_537 - 0.5) < 0.01
    assert abs(counts["127.0.0.1:9000"] / 65_537 - 0.25) < 0.01


def test_maglev_sticky_and_mostly_consistent() -> None:
    eps = states(*([1] * 5))
    before = MaglevPicker(eps, LbConfig("MAGLEV", table_size=5_011))
    after = MaglevPicker(eps[:4], LbConfig("MAGLEV", table_size=5_011))
    rng = random.Random(9)
    keys = [rng.getrandbits(64) for _ in range(3000)]
    assert [before.pick(CALL, k) for k in keys] == [before.pick(CALL, k) for k in keys]
    moved = [k for k in keys if before.pick(CALL, k) is not after.pick(CALL, k)]
    from_removed = sum(1 for k in moved if before.pick(CALL, k) is eps[4])
    # the removed endpoint's fifth moves; Maglev disturbs only a little more
    assert from_removed / len(keys) > 0.15 and len(moved) / len(keys) < 0.30
