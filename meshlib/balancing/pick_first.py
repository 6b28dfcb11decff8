"""PICK_FIRST: every request to the first endpoint (gRPC's default), the next on re-selection.

``shuffle_address_list`` shuffles the order once, when the picker is built, so that
clients spread over the endpoints (gRFC A62).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from xds_client.resources import LbConfig

from .._call import Call
from ..cluster._endpoints import EndpointState

__all__ = ["PickFirstPicker"]


class PickFirstPicker:
    def __init__(
        self,
        endpoints: Sequence[EndpointState],
        config: LbConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        order = list(endpoints)
        if config is not None and config.shuffle_address_list:
            (rng or random.Random()).shuffle(order)
        self._endpoints = tuple(order)

    def pick(
        self, call: Call, hash_key: int | None = None, attempt: int = 0
    ) -> EndpointState | None:
        if not self._endpoints:
            return None
        return self._endpoints[attempt % len(self._endpoints)]
