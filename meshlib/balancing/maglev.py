"""MAGLEV: consistent hashing with a lookup table (Google's Maglev, as in Envoy).

Each endpoint walks its own permutation of the table (offset ``xxhash64(address, 0)``,
skip ``xxhash64(address, 1)``) and claims free slots in turn; an endpoint with half the
largest normalized weight takes a turn every other round. The table (``table_size``,
a prime, default 65,537) is built once per endpoint set; a pick is one index:
``table[hash_key % size]`` (re-selection adds ``attempt``). Without a hash key the slot
is random, as in Envoy.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from xds_client.resources import LbConfig

from .._call import Call
from .._endpoints import EndpointState
from ._hashing import xxhash64
from .ring_hash import normalized_weights

__all__ = ["MaglevPicker", "build_table"]


def build_table(
    endpoints: Sequence[EndpointState], weights: Sequence[float], size: int
) -> list[EndpointState]:
    """The Maglev lookup table: ``size`` slots, each naming an endpoint."""
    if not endpoints:
        return []
    offsets = [xxhash64(e.address, 0) % size for e in endpoints]
    skips = [xxhash64(e.address, 1) % (size - 1) + 1 for e in endpoints]
    nexts = [0] * len(endpoints)
    targets = [0.0] * len(endpoints)
    max_weight = max(weights)
    table: list[int] = [-1] * size
    filled = 0
    iteration = 1
    while filled < size:
        for i in range(len(endpoints)):
            if filled == size:
                break
            if iteration * weights[i] < targets[i]:
                continue
            targets[i] += max_weight
            offset, skip, n = offsets[i], skips[i], nexts[i]
            slot = (offset + skip * n) % size
            while table[slot] >= 0:
                n += 1
                slot = (offset + skip * n) % size
            table[slot] = i
            nexts[i] = n + 1
            filled += 1
        iteration += 1
    return [endpoints[i] for i in table]


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
