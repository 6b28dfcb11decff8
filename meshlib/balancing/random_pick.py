"""RANDOM: a uniformly random endpoint (Envoy's random policy ignores endpoint weights)."""

from __future__ import annotations

import random
from collections.abc import Sequence

from xds_client.resources import LbConfig

from .._call import Call
from ..cluster._endpoints import EndpointState

__all__ = ["RandomPicker"]


class RandomPicker:
    def __init__(
        self,
        endpoints: Sequence[EndpointState],
        config: LbConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._endpoints = tuple(endpoints)
        self._rng = rng or random.Random()

    def pick(
        self, call: Call, hash_key: int | None = None, attempt: int = 0
    ) -> EndpointState | None:
        if not self._endpoints:
            return None
        return self._endpoints[self._rng.randrange(len(self._endpoints))]
