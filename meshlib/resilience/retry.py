"""Retries: the attempt loop of one call, as a sans-I/O decision object.

tenacity's split of decision and driver is the model, and its building blocks do the
work: ``stop_after_attempt`` (num_retries + 1 tries) and ``wait_random_exponential``
(Envoy's fully jittered back-off: base 25 ms, max 10x base by default) over a
``RetryCallState``; the retry predicate is Envoy's ``retry_on`` over the attempt's
:class:`~meshlib._outcome.Outcome` (:meth:`CompiledRetry.retriable`). A driver (sync or async) asks
:meth:`AttemptLoop.next_attempt` for where and within what time to send, sends, and
hands the outcome to :meth:`AttemptLoop.record`, which says whether to stop or how long
to back off before the next attempt. Only the driver knows how to wait.
"""

from __future__ import annotations

import contextlib
import email.utils
import inspect
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import tenacity
from tenacity import stop_after_attempt, wait_random_exponential

from xds_client.resources.route import RetryPolicy

from .._call import Call
from .._endpoints import EndpointState
from .._errors import NoHealthyUpstream, UpstreamTimeout
from .._outcome import Outcome, OutcomeKind
from ..routing._matchers import compile_header
from .timeouts import Deadline, per_try_timeout

if TYPE_CHECKING:
    from ..routing._plan import RoutePlan

__all__ = ["GRPC_RETRY_CODES", "Attempt", "AttemptLoop", "CompiledRetry", "Result"]

#: retry_on names of gRPC status codes.
GRPC_RETRY_CODES = {
    "cancelled": 1,
    "deadline-exceeded": 4,
    "resource-exhausted": 8,
    "internal": 13,
    "unavailable": 14,
}
_FAILURE_KINDS = (OutcomeKind.CONNECT_FAILURE, OutcomeKind.RESET, OutcomeKind.TIMEOUT)

Result = tuple[Outcome, Mapping[str, str]]
"""What an attempt came to: its outcome and the response headers (empty without one)."""


class _HeaderView:
    """Response headers seen through the request-header matchers' Call interface."""

    __slots__ = ("headers",)

    def __init__(self, headers: Mapping[str, str]) -> None:
        self.headers = headers


class CompiledRetry:
    """A RetryPolicy compiled once per Snapshot: what is retriable, tenacity's stop and
    wait, and the rate-limited (Retry-After style) back-off."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        on = policy.retry_on
        self._grpc_codes = frozenset(c for name, c in GRPC_RETRY_CODES.items() if name in on)
        self._status: Callable[[int], bool] = _status_predicate(policy)
        self._on_failure = bool(on & {"5xx", "gateway-error", "reset"})
        self._on_connect = bool(on & {"connect-failure", "reset-before-request"})
        self._response_headers = (
            tuple(compile_header(m) for m in policy.retriable_headers)
            if "retriable-headers" in on
            else ()
        )
        self._request_headers = tuple(compile_header(m) for m in policy.retriable_request_headers)
        self.retrying = tenacity.Retrying(
            stop=stop_after_attempt(policy.num_retries + 1),
            wait=wait_random_exponential(
                multiplier=policy.base_interval, max=policy.max_interval, exp_base=2
            ),
        )

    def applies_to(self, call: Call) -> bool:
        """retriable_request_headers: when set, only matching requests are retried."""
        return not self._request_headers or any(m(call) for m in self._request_headers)

    def retriable(self, result: Result) -> bool:
        """Envoy's retry_on conditions for one attempt's outcome."""
        outcome, headers = result
        if outcome.kind is OutcomeKind.RESPONSE:
            if outcome.grpc_status is not None and outcome.grpc_status in self._grpc_codes:
                return True
            if outcome.status is not None and self._status(outcome.status):
                return True
            if not self._response_headers:
                return False
            view: Any = _HeaderView(headers)
            return any(m(view) for m in self._response_headers)
        if outcome.kind in _FAILURE_KINDS:
            if self._on_failure:
                return True
            if outcome.kind is OutcomeKind.CONNECT_FAILURE:
                return self._on_connect
            # refused-stream: an Outcome does not tell REFUSED_STREAM from other resets yet
            return False
        return False  # LOCAL: overflow, fault: never retried

    def rate_limited_delay(self, headers: Mapping[str, str]) -> float | None:
        """rate_limited_retry_back_off: the first reset header giving a usable interval."""
        p = self.policy
        for name, fmt in p.rate_limited_headers:
            value = headers.get(name)
            if value is None:
                continue
            delay = _reset_interval(value.strip(), fmt)
            if delay is not None and 0 <= delay <= p.rate_limited_max_interval:
                return delay
        return None


def _status_predicate(policy: RetryPolicy) -> Callable[[int], bool]:
    on, codes = policy.retry_on, set()
    if "retriable-status-codes" in on:
        codes |= set(policy.retriable_status_codes)
    if "gateway-error" in on:
        codes |= {502, 503, 504}
    if "retriable-4xx" in on:
        codes.add(409)
    if "envoy-ratelimited" in on:
        pass  # only Envoy's own rate limit filter sets x-envoy-ratelimited
    frozen = frozenset(codes)
    if "5xx" in on:
        return lambda s: s >= 500 or s in frozen
    return frozen.__contains__


def _reset_interval(value: str, fmt: str) -> float | None:
    if fmt == "unix_timestamp":
        with contextlib.suppress(ValueError):
            return float(int(value)) - time.time()
        return None
    if value.isdigit():
        return float(value)
    parsed = None
    with contextlib.suppress(TypeError, ValueError, IndexError):
        parsed = email.utils.parsedate_to_datetime(value)  # Retry-After: HTTP-date
    return None if parsed is None else parsed.timestamp() - time.time()


@dataclass(slots=True)
class Attempt:
    """One try: where it goes and how long it may take."""

    number: int  # 1 for the first try
    endpoint: EndpointState
    timeout: float | None  # for this try: per-try timeout or what is left of the call's
    final_timeout: bool  # when this try times out, the call's deadline has passed
    admission: Any = None  # the cluster's Admission, released when recorded
    started: float = 0.0


class _Clusters:
    """The cluster layer as the attempt loop calls it (with a fallback for pick's
    hash_key and admission, so the two halves of the engine can land separately)."""

    @staticmethod
    def pick(view: Any, call: Call, hash_key: int | None, exclude: Any) -> EndpointState:
        if hash_key is not None and _accepts_hash_key(view):
            return view.pick(call, hash_key=hash_key, exclude=exclude)  # type: ignore[no-any-return]
        return view.pick(call, exclude=exclude)  # type: ignore[no-any-return]

    @staticmethod
    def admit_request(view: Any) -> Any:
        admit = getattr(view, "admit_request", None)
        return admit() if admit is not None else None

    @staticmethod
    def admit_retry(view: Any) -> tuple[bool, Any]:
        admit = getattr(view, "admit_retry", None)
        if admit is None:
            return True, None
        admission = admit()
        return admission is not None, admission


_HASH_KEY_SUPPORT: dict[type, bool] = {}


def _accepts_hash_key(view: Any) -> bool:
    cls = type(view)
    known = _HASH_KEY_SUPPORT.get(cls)
    if known is None:
        known = _HASH_KEY_SUPPORT[cls] = "hash_key" in inspect.signature(cls.pick).parameters
    return known


def _release(admission: Any) -> None:
    if admission is not None:
        admission.release()


class AttemptLoop:
    """The attempts of one call. Not thread-safe: one driver runs one loop.

    ``clusters`` is the Snapshot's cluster map read when the call started;
    ``replayable`` is False for a request body that cannot be sent twice (then no retry).
    """

    __slots__ = (
        "_retry",
        "_retry_admission",
        "_state",
        "call",
        "clock",
        "clusters",
        "deadline",
        "plan",
        "tried",
    )

    def __init__(
        self,
        plan: RoutePlan,
        call: Call,
        clusters: Mapping[str, Any],
        replayable: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plan = plan
        self.call = call
        self.clusters = clusters
        self.clock = clock
        self.deadline = Deadline.after(plan.timeout, clock)
        self.tried: list[EndpointState] = []
        self._state: tenacity.RetryCallState | None = None
        self._retry_admission: Any = None
        retry = plan.retry
        ok = retry is not None and replayable and retry.applies_to(call)
        self._retry: CompiledRetry | None = retry if ok else None

    def next_attempt(self) -> Attempt:
        """Admission, then an endpoint, for the next try. Raises UpstreamTimeout when the
        call's time is up, NoHealthyUpstream, or the cluster's CircuitBreakerOpen."""
        remaining = self.deadline.remaining()
        if remaining is not None and remaining <= 0:
            raise UpstreamTimeout(
                f"{self.plan.cluster}: upstream request timeout",
                target=self.call.authority,
                cluster=self.plan.cluster,
                reason="upstream_request_timeout",
            )
        name = self.plan.cluster
        view = self.clusters.get(name)
        if view is None:
            raise NoHealthyUpstream(
                f"{name}: no healthy upstream (unknown cluster)",
                target=self.call.authority,
                cluster=name,
                reason="no_healthy_upstream",
            )
        admission = _Clusters.admit_request(view)
        try:
            endpoint = self._pick(view)
        except BaseException:
            _release(admission)
            raise
        per_try = per_try_timeout(
            self._retry.policy.per_try_timeout if self._retry else None, self.plan.timeout
        )
        timeout, final = remaining, True
        if per_try is not None and (remaining is None or per_try < remaining):
            timeout, final = per_try, False
        endpoint.started()
        self.tried.append(endpoint)
        return Attempt(len(self.tried), endpoint, timeout, final, admission, self.clock())

    def _pick(self, view: Any) -> EndpointState:
        # previous_hosts: the cluster layer avoids ``exclude`` while another endpoint is
        # usable, re-selecting up to its own bound (host_selection_retry_max_attempts).
        retry = self._retry
        avoid = self.tried if retry is not None and retry.policy.previous_hosts else ()
        return _Clusters.pick(view, self.call, self.plan.hash_key, avoid)

    def record(
        self, attempt: Attempt, outcome: Outcome, headers: Mapping[str, str] | None = None
    ) -> float | None:
        """Record ``attempt``'s outcome. Returns None when the call is over (give the
        application this result), or the seconds to back off before the next attempt."""
        attempt.endpoint.finished(outcome)
        _release(attempt.admission)
        _release(self._retry_admission)
        self._retry_admission = None
        retry = self._retry
        if retry is None:
            return None
        if outcome.kind is OutcomeKind.TIMEOUT and attempt.final_timeout:
            return None  # the route timeout fired: Envoy answers 504, no retry
        headers = headers if headers is not None else {}
        if not retry.retriable((outcome, headers)):
            return None
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
        remaining = self.deadline.remaining()
        if remaining is not None and delay >= remaining:
            return None
        view = self.clusters.get(self.plan.cluster)
        admitted, self._retry_admission = _Clusters.admit_retry(view)
        return delay if admitted else None

    def close(self) -> None:
        """Release what an abandoned loop still holds."""
        _release(self._retry_admission)
        self._retry_admission = None
