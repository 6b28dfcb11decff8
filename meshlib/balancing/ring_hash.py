"""RING_HASH: consistent hashing on a ring (Envoy's ketama-style ring).

Each endpoint gets ring entries in proportion to its normalized weight: the scale is the
smallest that gives the lightest endpoint a whole number of entries at
``min_ring_size``, capped at ``max_ring_size``; entry ``i`` of an endpoint hashes
``"<address>_<i>"`` with the cluster's hash function. A request goes to the first entry
whose hash is at least its hash key (binary search), wrapping round; re-selection
(``attempt`` > 0) steps ``attempt`` entries further on. A request without a hash key
gets a random point, as in Envoy. Ring construction follows Envoy's, so meshlib and
Envoy send a given hash key to the same endpoint.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Sequence

from xds_client.resources import LbConfig

from .._call import Call
from ..cluster._endpoints import EndpointState
from ._hashing import murmur_hash2, xxhash64

__all__ = ["RingHashPicker", "build_ring", "normalized_weights"]


def normalized_weights(endpoints: Sequence[EndpointState]) -> list[float]:
    total = sum(e.endpoint.weight for e in endpoints)
    return [e.endpoint.weight / total for e in endpoints] if total else []


def build_ring(
    endpoints: Sequence[EndpointState],
    weights: Sequence[float],
    min_size: int,
    max_size: int,
    hash_function: str = "XX_HASH",
) -> tuple[list[int], list[EndpointState]]:
    """Sorted ring hashes and the endpoint owning each entry."""
    if not endpoints:
        return [], []
    hash_fn = murmur_hash2 if hash_function == "MURMUR_HASH_2" else xxhash64
    min_weight = min(weights)
    scale = min(math.ceil(min_weight * min_size) / min_weight, float(max_size))
    entries: list[tuple[int, int]] = []
    current = target = 0.0
    for index, (e, w) in enumerate(zip(endpoints, weights, strict=True)):
        target += scale * w
        prefix = f"{e.address}_"
        i = 0
        while current < target:
            entries.append((hash_fn(f"{prefix}{i}"), index))
            i += 1
            current += 1
    entries.sort(key=lambda entry: entry[0])
    return [h for h, _ in entries], [endpoints[i] for _, i in entries]


class RingHashPicker:
    def __init__(
        self,
        endpoints: Sequence[EndpointState],
        config: LbConfig | None = None,
        rng: random.Random | None = None,
        weights: Sequence[float] | None = None,
    ) -> None:
        cfg = config or LbConfig(policy="RING_HASH")
        w = list(weights) if weights is not None else normalized_weights(endpoints)
        self._hashes, self._owners = build_ring(
            endpoints, w, cfg.min_ring_size, cfg.max_ring_size, cfg.hash_function
        )
        self._rng = rng or random.Random()

    @property
    def ring_size(self) -> int:
        return len(self._hashes)

    def pick(
        self, call: Call, hash_key: int | None = None, attempt: int = 0
    ) -> EndpointState | None:
        if not self._hashes:
            return None
        h = hash_key if hash_key is not None else self._rng.getrandbits(64)
        index = bisect.bisect_left(self._hashes, h)
        if index == len(self._hashes):
            index = 0
        if attempt:
            index = (index + attempt) % len(self._hashes)
        return self._owners[index]
