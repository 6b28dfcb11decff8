"""MAGLEV: consistent hashing with a lookup table (Google's Maglev, as in Envoy).

Each endpoint walks its own permutation of the table (offset ``xxhash64(address, 0)``,
skip ``xxhash64(address, 1)``) and claims free slots in turn; an endpoint with half the
largest normalized weight takes a turn every other round. The table (``table_size``,
a prime, default 65,537) is built once per endpoint set; a pick is one index:
``table[hash_key % size]`` (re-selection adds ``attempt``). Without a hash key the slot
is random, as in Envoy.

The build produces Envoy's table exactly, in two phases. While many slots are free an
endpoint steps along its permutation to the next free slot. Once few are left (about
``sqrt(table_size)``), stepping would cost ``size / free`` probes per turn, so instead
the endpoint takes the free slot that comes first in its permutation: slot ``s`` is at
position ``(s - offset) * skip^-1 mod size`` (the size is prime), and every slot before
the endpoint's current position is already taken. The order of turns is worked out
first, with Envoy's float test ``round * weight >= target``: by testing every endpoint
each round while weights are close, or, with a few heavy endpoints (most tests would
fail), by computing each endpoint's rounds in bulk and sorting.
"""

from __future__ import annotations

import itertools
import math
import operator
import random
from collections.abc import Sequence

from xds_client.resources import LbConfig

from .._call import Call
from ..cluster._endpoints import EndpointState
from ._hashing import xxhash64
from .ring_hash import normalized_weights

__all__ = ["MaglevPicker", "build_table"]

#: Largest weight / mean weight up to which rounds are scanned (each round tests every
#: endpoint); above it most tests fail, and each endpoint's rounds are computed instead.
_SCAN_SKEW = 4.0


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    return all(n % d for d in range(2, math.isqrt(n) + 1))


def _host_rounds(weight: float, max_weight: float, last: int) -> list[int]:
    """Rounds up to ``last`` in which an endpoint of ``weight`` takes a turn.

    Envoy admits it in round ``r`` when ``r * weight >= target``, its target growing by
    ``max_weight`` per turn taken; the first round admits everyone. Computed in bulk as
    ``ceil(target / weight)`` and checked against that exact float test.
    """
    if weight <= 0.0:
        return [1]  # its target is above zero after one turn: never admitted again
    count = int(last * weight / max_weight) + 2
    targets = list(itertools.accumulate(itertools.repeat(max_weight, count)))
    rounds = list(map(math.ceil, map(weight.__rtruediv__, targets)))
    if not (
        all(map(operator.ge, map(weight.__mul__, rounds), targets))
        and all(map(operator.lt, map(weight.__mul__, map((-1).__add__, rounds)), targets))
    ):  # a float edge: move those rounds to the first one passing the test
        for k, (r, target) in enumerate(zip(rounds, targets, strict=True)):
            while r * weight < target:
                r += 1
            while (r - 1) * weight >= target:
                r -= 1
            rounds[k] = r
    if not all(map(operator.lt, [1, *rounds[:-1]], rounds)):
        # a weight within float noise of the largest: Envoy's test, turn by turn
        rounds, r = [], 1
        for target in targets:
            r += 1
            while r * weight < target:
                r += 1
            rounds.append(r)
    return [1, *itertools.takewhile(last.__ge__, rounds)]


def _scanned_turns(weights: Sequence[float], size: int) -> list[int]:
    """``_turns`` by Envoy's test for every endpoint in every round: n checks a round."""
    max_weight = max(weights)
    targets = [0.0] * len(weights)
    everyone = range(len(weights))
    turns: list[int] = []
    r = 1
    while len(turns) < size:
        tested = map(operator.ge, map(float(r).__mul__, weights), targets)
        admitted = list(itertools.compress(everyone, tested))
        for i in admitted:
            targets[i] += max_weight
        turns.extend(admitted)
        r += 1
    del turns[size:]
    return turns


def _turns(weights: Sequence[float], size: int) -> list[int]:
    """Endpoint indices in the order they claim slots: ``size`` turns."""
    n = len(weights)
    max_weight = max(weights)
    full = [i for i, w in enumerate(weights) if w == max_weight]
    if len(full) == n:
        rounds, extra = divmod(size, n)
        return full * rounds + full[:extra]
    per_round = sum(weights) / max_weight  # turns per round
    if n / per_round <= _SCAN_SKEW:
        return _scanned_turns(weights, size)
    last = int(size / per_round) + 2
    while True:
        keys: list[int] = []  # round * n + index: sorted, the order of turns
        for i, w in enumerate(weights):
            admitted: Sequence[int] = (
                range(1, last + 1) if w == max_weight else _host_rounds(w, max_weight, last)
            )
            keys.extend(map(operator.add, map(n.__mul__, admitted), itertools.repeat(i)))
        if len(keys) >= size:
            keys.sort()
            return list(map(n.__rmod__, keys[:size]))
        last *= 2


def build_table(
    endpoints: Sequence[EndpointState], weights: Sequence[float], size: int
) -> list[EndpointState]:
    """The Maglev lookup table: ``size`` slots, each naming an endpoint."""
    if not endpoints:
        return []
    if not _is_prime(size):
        raise ValueError(f"maglev table_size must be a prime number, got {size}")
    offsets = [xxhash64(e.address, 0) % size for e in endpoints]
    skips = [xxhash64(e.address, 1) % (size - 1) + 1 for e in endpoints]
    turns = _turns(weights, size)
    owner = [-1] * size
    slots = offsets[:]  # each endpoint's current position in its permutation, as a slot
    sparse_at = min(size, max(64, math.isqrt(size)))
    dense = size - sparse_at  # turns taken by stepping
    for i in turns[:dense]:
        s = slots[i]
        skip = skips[i]
        while owner[s] >= 0:
            s += skip
            if s >= size:
                s -= size
        owner[s] = i
        s += skip
        slots[i] = s - size if s >= size else s
    free = {s for s in range(size) if owner[s] < 0}
    inverses: dict[int, int] = {}
    for i in turns[dense:]:
        inv = inverses.get(i)
        if inv is None:
            inv = inverses[i] = pow(skips[i], -1, size)
        off = offsets[i]
        position = min([(s - off) * inv % size for s in free])
        s = (off + skips[i] * position) % size
        free.remove(s)
        owner[s] = i
    return [endpoints[i] for i in owner]


class MaglevPicker:
    def __init__(
        self,
        endpoints: Sequence[EndpointState],
        config: LbConfig | None = None,
        rng: random.Random | None = None,
        weights: Sequence[float] | None = None,
    ) -> None:
        cfg = config or LbConfig(policy="MAGLEV")
        w = list(weights) if weights is not None else normalized_weights(endpoints)
        self._table = build_table(endpoints, w, cfg.table_size)
        self._rng = rng or random.Random()

    def pick(
        self, call: Call, hash_key: int | None = None, attempt: int = 0
    ) -> EndpointState | None:
        if not self._table:
            return None
        h = hash_key if hash_key is not None else self._rng.getrandbits(64)
        return self._table[(h + attempt) % len(self._table)]
