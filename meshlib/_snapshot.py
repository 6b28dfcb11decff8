"""The immutable Snapshot the data path reads: listeners, route tables, clusters, pickers.

``ClusterView`` is the concrete layer's interface, as the logical layer (routing,
retries) calls it:

    if view.drops: view.check_drop(target)   # once per request; RequestDropped
    admission = view.admit_request()          # per attempt; CircuitBreakerOpen ("overflow")
    retry = view.admit_retry()                # before a retry; None: retry refused
    endpoint = view.pick(call, hash_key=h, exclude=tried, reselections=n)  # NoHealthyUpstream
    endpoint.started(); ...; endpoint.finished(outcome)
    admission.release(); retry and retry.release()

``hash_key`` is the route's hash-policy hash (RING_HASH / MAGLEV; Envoy hashes a header
value with ``meshlib.balancing.xxhash64``). ``exclude`` implements the previous_hosts
retry predicate: a selected endpoint in it is re-selected up to ``reselections`` times
(Envoy's host_selection_retry_max_attempts), then the last one selected is used.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from xds_client.resources import ClusterResource, LbConfig
from xds_client.resources.endpoints import DropOverload

from ._call import Call
from ._errors import NoHealthyUpstream, RequestDropped
from .balancing import Balancer, LocalCluster, LocalityGroup
from .cluster._endpoints import EndpointState
from .resilience.breakers import Admission, ClusterBreaker
from .routing import RouteTable

__all__ = [
    "MAX_RESELECTIONS",
    "MAX_SELECTIONS",
    "ClusterView",
    "ListenerView",
    "LiveBalancer",
    "Snapshot",
]

#: Host selections per pick that may land on ejected or breaker-open endpoints before
#: the pick gives up (Envoy's balancers never offer such hosts; meshlib's skip them).
MAX_SELECTIONS = 8
#: Upper bound on host_selection_retry_max_attempts (a uint32 in xDS) per pick.
MAX_RESELECTIONS = 64


@dataclass(frozen=True, slots=True)
class ListenerView:
    """A resolved target: its route table, or why it is unusable."""

    name: str
    routes: RouteTable | None
    error: str = ""
    missing: bool = False  # the control plane says no such listener: not a mesh host


class LiveBalancer:
    """A cluster's Balancer, replaced whole (off the request path) when ejections change
    which endpoints are available."""

    def __init__(
        self,
        groups: Sequence[LocalityGroup],
        config: LbConfig,
        overprovisioning_factor: float = 1.4,
        panic_threshold: float = 50.0,
        local: LocalCluster | None = None,
        tier: str | None = None,
    ) -> None:
        self._groups = tuple(groups)
        self._config = config
        self._factor = overprovisioning_factor
        self._panic = panic_threshold
        self._local = local  # the workload's own cluster, for zone-aware routing
        self._tier = tier  # an aggregate's choice: only the "healthy" or "degraded" hosts
        self.balancer = self._build()

    def _build(self) -> Balancer:
        return Balancer(
            self._groups,
            self._config,
            overprovisioning_factor=self._factor,
            panic_threshold=self._panic,
            local=self._local,
            tier=self._tier,
        )

    def rebuild(self) -> None:
        self.balancer = self._build()

    def pick(
        self, call: Call, hash_key: int | None = None, attempt: int = 0
    ) -> EndpointState | None:
        return self.balancer.pick(call, hash_key, attempt)


@dataclass(frozen=True, slots=True)
class ClusterView:
    """A cluster with its endpoints, its balancer, its circuit breaker and its EDS
    drop_overloads."""

    name: str
    resource: ClusterResource | None
    endpoints: tuple[EndpointState, ...]
    picker: LiveBalancer | None
    error: str = ""
    breaker: ClusterBreaker | None = None
    drops: tuple[DropOverload, ...] = ()

    def check_drop(self, target: str = "", rng: Callable[[], float] = random.random) -> None:
        """Draw the drop_overloads once for a request (before host selection): each
        category drops its fraction in turn; raises RequestDropped for a dropped one."""
        for drop in self.drops:
            if drop.fraction > 0 and (drop.fraction >= 1 or rng() < drop.fraction):
                if self.breaker is not None:
                    self.breaker.count_drop()
                raise RequestDropped(
                    f"{self.name}: request dropped by drop_overload {drop.category!r}",
                    target=target,
                    cluster=self.name,
                    category=drop.category,
                    unconditional=drop.fraction >= 1,
                )

    def pick(
        self,
        call: Call,
        *,
        hash_key: int | None = None,
        exclude: Collection[EndpointState] = (),
        reselections: int = MAX_SELECTIONS,
    ) -> EndpointState:
        """An endpoint for one attempt; raises NoHealthyUpstream.

        A selected endpoint in ``exclude`` (the retry host predicate) is selected again,
        up to ``reselections`` times (capped at MAX_RESELECTIONS); then, as in Envoy,
        the last one selected is used. The attempt loop passes the route's
        host_selection_retry_max_attempts (Envoy's default 1; istiod sets 5); the default
        here serves direct callers. Ejected and breaker-open endpoints are skipped (at
        most MAX_SELECTIONS of them), as Envoy's balancers never offer them.
        """
        picker = self.picker
        if picker is not None:
            balancer = picker.balancer
            rejected = blocked = selection = 0
            fallback: EndpointState | None = None  # an excluded endpoint that is usable
            ejected: EndpointState | None = None
            while (endpoint := balancer.pick(call, hash_key, selection)) is not None:
                if (
                    exclude
                    and endpoint in exclude
                    and rejected < min(reselections, MAX_RESELECTIONS)
                ):
                    rejected += 1  # the predicate rejects it: select again
                    if fallback is None and not endpoint.blocked:
                        fallback = endpoint
                elif endpoint.try_acquire():
                    return endpoint
                else:
                    if endpoint.ejected and ejected is None:
                        ejected = endpoint
                    blocked += 1
                    if blocked >= MAX_SELECTIONS:
                        break
                selection += 1
            if fallback is not None and fallback.try_acquire():
                return fallback
            # In panic Envoy balances over ejected hosts too (the balancer was rebuilt so).
            if ejected is not None and any(balancer.panic):
                breaker = ejected.breaker
                if breaker is None or breaker.try_acquire():
                    return ejected
        raise self.no_healthy_upstream(call, self.error)

    def no_healthy_upstream(self, call: Call, why: str = "") -> NoHealthyUpstream:
        """The error for a pick that found nothing (``why``: the cluster's reason)."""
        return NoHealthyUpstream(
            f"{self.name}: no healthy upstream" + (f" ({why})" if why else ""),
            target=call.authority,
            cluster=self.name,
            reason="no_healthy_upstream",
        )

    def admit_request(self, priority: str = "DEFAULT", *, target: str = "") -> Admission:
        """A slot under max_requests for one upstream request (release it when the attempt
        ends); raises CircuitBreakerOpen (reason ``overflow``) when the cluster is full."""
        if self.breaker is None:
            return Admission(None, ("requests", priority))
        return self.breaker.admit_request(priority, target=target)

    def admit_retry(self, priority: str = "DEFAULT") -> Admission | None:
        """A slot for one retry, or None when max_retries / the retry budget refuses."""
        if self.breaker is None:
            return Admission(None, ("retries", priority))
        return self.breaker.admit_retry(priority)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One consistent view of the mesh config. Never mutated; replaced whole."""

    version: int = 0
    listeners: Mapping[str, ListenerView] = field(default_factory=dict)
    clusters: Mapping[str, ClusterView] = field(default_factory=dict)
