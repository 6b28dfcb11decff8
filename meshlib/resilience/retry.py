"""Retries: the attempt loop of one call, as a sans-I/O decision object.

tenacity's split of decision and driver is the model, and its building blocks do the
work once a retry is decided: ``stop_after_attempt`` (num_retries + 1 tries) and
``wait_random_exponential`` (Envoy's fully jittered back-off: base 25 ms, max 10x base by
default) over a ``RetryCallState``; the retry predicate is Envoy's ``retry_on`` over the
attempt's :class:`~meshlib._outcome.Outcome` (:meth:`CompiledRetry.retriable`). A driver
(sync or async) asks :meth:`AttemptLoop.next_attempt` for where and within what time to
send, sends, and hands the outcome to :meth:`AttemptLoop.record`, which says whether to
stop or how long to back off before the next attempt. Only the driver knows how to wait.

The first attempt is the fast path: the loop touches tenacity only after an attempt
failed in a way ``retry_on`` retries, and talks to the cluster layer
(:class:`ClusterLayer`, implemented by ``ClusterView``) directly. The policy itself
(``retry_on``, back-off) is compiled in :mod:`.retry_policy`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import tenacity

from .._call import Call
from .._errors import NoHealthyUpstream, UpstreamTimeout
from .._outcome import Outcome, OutcomeKind
from ..cluster._endpoints import EndpointState
from .retry_policy import GRPC_RETRY_CODES, CompiledRetry, Result
from .timeouts import Deadline, per_try_timeout

if TYPE_CHECKING:
    from ..routing._plan import RoutePlan

__all__ = [
    "GRPC_RETRY_CODES",
    "Attempt",
    "AttemptLoop",
    "ClusterLayer",
    "CompiledRetry",
    "Releasable",
    "Result",
]


class Releasable(Protocol):
    """A slot under a circuit-breaker threshold."""

    def release(self) -> None: ...


class ClusterLayer(Protocol):
    """The cluster layer as the attempt loop calls it (``ClusterView`` implements it;
    see meshlib._snapshot)."""

    @property
    def drops(self) -> Collection[Any]: ...

    def check_drop(self, target: str = "") -> None: ...

    def admit_request(self, priority: str = "DEFAULT", *, target: str = "") -> Releasable: ...

    def admit_retry(self, priority: str = "DEFAULT") -> Releasable | None: ...

    def pick(
        self,
        call: Call,
        *,
        hash_key: int | None = None,
        exclude: Collection[EndpointState] = (),
        reselections: int = 1,
    ) -> EndpointState: ...


class Attempt:
    """One try: where it goes and how long it may take."""

    __slots__ = ("admission", "endpoint", "final_timeout", "number", "started", "timeout")

    def __init__(
        self,
        number: int,
        endpoint: EndpointState,
        timeout: float | None,
        final_timeout: bool,
        admission: Releasable | None = None,
        started: float = 0.0,
    ) -> None:
        self.number = number  # 1 for the first try
        self.endpoint = endpoint
        self.timeout = timeout  # for this try: per-try timeout or what is left of the call's
        self.final_timeout = final_timeout  # when this try times out, the deadline has passed
        self.admission = admission  # the cluster's Admission, released when recorded
        self.started = started

    def __repr__(self) -> str:
        return (
            f"Attempt(number={self.number}, endpoint={self.endpoint!r}, "
            f"timeout={self.timeout!r}, final_timeout={self.final_timeout})"
        )


class AttemptLoop:
    """The attempts of one call. Not thread-safe: one driver runs one loop.

    ``clusters`` is the Snapshot's cluster map read when the call started;
    ``replayable`` is False for a request body that cannot be sent twice (then no retry).
    The call's deadline is the route timeout from now, or ``deadline`` (monotonic
    seconds on ``clock``) when that is earlier; :meth:`cap` brings it forward later.
    """

    __slots__ = (
        "_at",
        "_count",
        "_per_try",
        "_retry",
        "_retry_admission",
        "_state",
        "_tried",
        "call",
        "clock",
        "clusters",
        "plan",
    )

    def __init__(
        self,
        plan: RoutePlan,
        call: Call,
        clusters: Mapping[str, ClusterLayer],
        replayable: bool = True,
        clock: Callable[[], float] = time.monotonic,
        deadline: float | None = None,
    ) -> None:
        self.plan = plan
        self.call = call
        self.clusters = clusters
        self.clock = clock
        timeout = plan.timeout
        at = None if timeout is None else clock() + timeout  # the call's deadline
        if deadline is not None and (at is None or deadline < at):
            at = deadline
        self._at = at
        self._count = 0
        self._tried: list[EndpointState] | None = None
        self._state: tenacity.RetryCallState | None = None
        self._retry_admission: Releasable | None = None
        retry = plan.retry
        if retry is not None and not (
            replayable and (not retry.request_headers or retry.applies_to(call))
        ):
            retry = None
        self._retry = retry
        self._per_try = (
            per_try_timeout(retry.per_try_timeout, timeout)
            if retry is not None and retry.per_try_timeout is not None
            else None
        )

    def cap(self, at: float | None) -> None:
        """Bring the call's deadline forward to ``at`` (monotonic seconds, on this loop's
        clock) when that is earlier; None: no cap."""
        if at is not None:
            current = self._at
            if current is None or at < current:
                self._at = at

    @property
    def at(self) -> float | None:
        """The call's deadline (monotonic seconds), None: no limit."""
        return self._at

    @property
    def deadline(self) -> Deadline:
        """When the whole call must be done (every attempt and back-off)."""
        return Deadline(self._at, self.clock)

    @deadline.setter
    def deadline(self, deadline: Deadline) -> None:
        self._at = deadline.at

    @property
    def tried(self) -> list[EndpointState]:
        """The endpoints of the attempts that failed retriably (previous_hosts' set)."""
        return list(self._tried or ())

    def next_attempt(self) -> Attempt:
        """Admission, then an endpoint, for the next try. Raises UpstreamTimeout when the
        call's time is up, NoHealthyUpstream, the cluster's CircuitBreakerOpen, or (for the
        first try only) RequestDropped by the cluster's drop_overloads."""
        now = self.clock()
        at = self._at
        remaining = None if at is None else at - now
        plan = self.plan
        if remaining is not None and remaining <= 0:
            raise UpstreamTimeout(
                f"{plan.cluster}: upstream request timeout",
                target=self.call.authority,
                cluster=plan.cluster,
                reason="upstream_request_timeout",
            )
        view = self.clusters.get(plan.cluster)
        if view is None:
            raise NoHealthyUpstream(
                f"{plan.cluster}: no healthy upstream (unknown cluster)",
                target=self.call.authority,
                cluster=plan.cluster,
                reason="no_healthy_upstream",
            )
        number = self._count + 1
        if number == 1 and view.drops:
            view.check_drop(self.call.authority)  # once per request, before host selection
        admission = view.admit_request(plan.priority, target=self.call.authority)
        try:
            if number == 1:
                endpoint = view.pick(self.call, hash_key=plan.hash_key)
            else:
                endpoint = self._reselect(view)
        except BaseException:
            admission.release()
            raise
        per_try = self._per_try
        timeout: float | None
        if per_try is not None and (remaining is None or per_try < remaining):
            timeout, final = per_try, False
        else:
            timeout, final = remaining, True
        endpoint.started()
        self._count = number
        return Attempt(number, endpoint, timeout, final, admission, now)

    def _reselect(self, view: ClusterLayer) -> EndpointState:
        # previous_hosts: the cluster layer re-selects an endpoint already tried up to
        # host_selection_retry_max_attempts times.
        retry = self._retry
        if retry is None or not retry.previous_hosts or not self._tried:
            return view.pick(self.call, hash_key=self.plan.hash_key)
        return view.pick(
            self.call,
            hash_key=self.plan.hash_key,
            exclude=self._tried,
            reselections=retry.reselections,
        )

    def record(
        self, attempt: Attempt, outcome: Outcome, headers: Mapping[str, str] | None = None
    ) -> float | None:
        """Record ``attempt``'s outcome. Returns None when the call is over (give the
        application this result), or the seconds to back off before the next attempt."""
        attempt.endpoint.finished(outcome)
        admission = attempt.admission
        if admission is not None:
            attempt.admission = None
            admission.release()
        if self._retry_admission is not None:
            self.close()
        retry = self._retry
        if retry is None:
            return None
        if outcome.kind is OutcomeKind.TIMEOUT and attempt.final_timeout:
            return None  # the route timeout fired: Envoy answers 504, no retry
        if not retry.retriable(outcome, headers):
            return None
        return self._retry_delay(retry, attempt, outcome, headers or {})

    def _retry_delay(
        self, retry: CompiledRetry, attempt: Attempt, outcome: Outcome, headers: Mapping[str, str]
    ) -> float | None:
        """A retriable failure: tenacity's stop and wait, the deadline, retry admission."""
        tried = self._tried
        if tried is None:
            tried = self._tried = []
        tried.append(attempt.endpoint)
        state = self._state
        if state is None:
            state = self._state = tenacity.RetryCallState(retry.retrying, None, (), {})
        state.attempt_number = attempt.number
        state.set_result((outcome, headers))
        if retry.retrying.stop(state):
            return None
        delay = retry.rate_limited_delay(headers) if headers else None
        if delay is None:
            delay = retry.retrying.wait(state)
        at = self._at
        if at is not None and delay >= at - self.clock():
            return None
        view = self.clusters.get(self.plan.cluster)
        if view is None:
            return None
        self._retry_admission = view.admit_retry(self.plan.priority)
        return delay if self._retry_admission is not None else None

    def close(self) -> None:
        """Release what an abandoned loop still holds."""
        admission, self._retry_admission = self._retry_admission, None
        if admission is not None:
            admission.release()
