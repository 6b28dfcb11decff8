"""The immutable Snapshot the data path reads: listeners, route tables, clusters, pickers.

``ClusterView`` is the concrete layer's interface, as the logical layer (routing,
retries) calls it, per attempt:

    admission = view.admit_request()          # CircuitBreakerOpen (reason "overflow")
    retry = view.admit_retry()                # before a retry; None: retry refused
    endpoint = view.pick(call, hash_key=h, exclude=tried)   # NoHealthyUpstream
    endpoint.started(); ...; endpoint.finished(outcome)
    admission.release(); retry and retry.release()

``hash_key`` is the route's hash-policy hash (RING_HASH / MAGLEV; Envoy hashes a header
value with ``meshlib.balancing.xxhash64``). ``exclude`` implements the previous_hosts
retry predicate: those endpoints are avoided while another one is usable.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from xds_client.resources import ClusterResource, LbConfig

from ._call import Call
from ._endpoints import EndpointState
from ._errors import NoHealthyUpstream
from ._routing import RouteTable
from .balancing import Balancer, LocalityGroup
from .resilience.breakers import Admission, ClusterBreaker

__all__ = ["MAX_SELECTIONS", "ClusterView", "ListenerView", "LiveBalancer", "Snapshot"]

#: Host selections per pick when the chosen endpoint is excluded, ejected or its breaker
#: is open (istiod sets Envoy's host_selection_retry_max_attempts to 5).
MAX_SELECTIONS = 8


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
    ) -> None:
        self._groups = tuple(groups)
        self._config = config
        self._factor = overprovisioning_factor
        self._panic = panic_threshold
        self.balancer = self._build()

    def _build(self) -> Balancer:
        return Balancer(
            self._groups,
            self._config,
            overprovisioning_factor=self._factor,
            panic_threshold=self._panic,
        )

    def rebuild(self) -> None:
        self.balancer = self._build()

    def pick(
        self, call: Call, hash_key: int | None = None, attempt: int = 0
    ) -> EndpointState | None:
        return self.balancer.pick(call, hash_key, attempt)


@dataclass(frozen=True, slots=True)
class ClusterView:
    """A cluster with its endpoints, its balancer and its circuit breaker."""

    name: str
    resource: ClusterResource | None
    endpoints: tuple[EndpointState, ...]
    picker: LiveBalancer | None
    error: str = ""
    breaker: ClusterBreaker | None = None

    def pick(
        self,
        call: Call,
        *,
        hash_key: int | None = None,
        exclude: Collection[EndpointState] = (),
    ) -> EndpointState:
        """An endpoint for one attempt, avoiding ``exclude`` (retry host predicates) when
        possible; raises NoHealthyUpstream."""
        picker = self.picker
        fallback: EndpointState | None = None
        ejected: EndpointState | None = None
        if picker is not None:
            for attempt in range(MAX_SELECTIONS):
                endpoint = picker.pick(call, hash_key, attempt)
                if endpoint is None:
                    break
                if exclude and endpoint in exclude:
                    if fallback is None and not endpoint.blocked:
                        fallback = endpoint
                    continue
                if endpoint.try_acquire():
                    return endpoint
                if endpoint.ejected and ejected is None:
                    ejected = endpoint
            if fallback is not None and fallback.try_acquire():
                return fallback
            # In panic Envoy balances over ejected hosts too (the balancer was rebuilt so).
            if ejected is not None and any(picker.balancer.panic):
                breaker = ejected.breaker
                if breaker is None or breaker.try_acquire():
                    return ejected
        why = f" ({self.error})" if self.error else ""
        raise NoHealthyUpstream(
            f"{self.name}: no healthy upstream{why}",
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
