"""PEAK_EWMA: latency-aware power of two choices (Finagle's and Linkerd's balancer).

Opt-in, meshlib's own policy: select it with a ``load_balancing_policy`` entry whose
typed_config is a TypedStruct with type_url
``type.googleapis.com/meshlib.balancing.PeakEwma`` (see ``xds_client.resources.
PEAK_EWMA_TYPE_URL``). Each endpoint keeps a peak-sensitive EWMA of its latency (jumps
up at once, decays with ``decay_time``); the cost of an endpoint is that latency (or
``default_rtt`` before the first sample) times ``active_requests + 1``, and the cheaper of
two uniformly drawn endpoints wins.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from xds_client.resources import LbConfig

from .._call import Call
from ..cluster._endpoints import EndpointState

__all__ = ["PeakEwmaPicker"]


class PeakEwmaPicker:
    def __init__(
        self,
        endpoints: Sequence[EndpointState],
        config: LbConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        cfg = config or LbConfig(policy="PEAK_EWMA")
        self._endpoints = tuple(endpoints)
        self._default_rtt = cfg.default_rtt
        self._rng = rng or random.Random()
        for e in self._endpoints:
            e.decay_time = cfg.decay_time

    def cost(self, e: EndpointState) -> float:
        latency = e.ewma if e.ewma > 0 else self._default_rtt
        return latency * (e.active_requests + 1)

    def pick(
        self, call: Call, hash_key: int | None = None, attempt: int = 0
    ) -> EndpointState | None:
        n = len(self._endpoints)
        if n <= 1:
            return self._endpoints[0] if n else None
        i = self._rng.randrange(n)
        j = self._rng.randrange(n - 1)
        a, b = self._endpoints[i], self._endpoints[j + (j >= i)]
        return a if self.cost(a) <= self.cost(b) else b
