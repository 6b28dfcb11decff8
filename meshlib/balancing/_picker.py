"""The load-balancer seam: a picker chooses one endpoint from an immutable set.

A picker is built (on the xDS thread) over the endpoints one priority level or locality
may use, already filtered for health by the Balancer; ``pick`` runs per request and does
O(1) or O(log n) work. ``hash_key`` is the request hash the routing layer computed from
the route's hash policies (None: no hash policy matched); ``attempt`` counts host
re-selections for the same attempt (retry host predicates): hash-based pickers step
to another ring/table entry, the others simply pick again.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol

from xds_client.resources import LbConfig

from .._call import Call
from ..cluster._endpoints import EndpointState

__all__ = ["Picker", "PickerFactory"]


class Picker(Protocol):
    """Built once per endpoint set (per Snapshot); ``pick`` runs per request."""

    def pick(
        self, call: Call, hash_key: int | None = None, attempt: int = 0
    ) -> EndpointState | None:
        """An endpoint for ``call``, or None when the set is empty."""
        ...


class PickerFactory(Protocol):
    def __call__(
        self,
        endpoints: Sequence[EndpointState],
        config: LbConfig = ...,
        rng: random.Random | None = ...,
    ) -> Picker: ...
