"""Retry policies compiled once per Snapshot, as one ``tenacity.Retrying`` each.

The decision after a failed try is tenacity's own (:meth:`tenacity.Retrying.iter` over an
:class:`AttemptState`), from small objects composed with tenacity's operators:

- retry: :class:`retry_unless_route_timeout` ``&`` :class:`retry_if_retry_on` (Envoy's
  ``retry_on`` over the try's :class:`~meshlib._outcome.Outcome` and response headers);
- wait: :class:`wait_reset_header` (``rate_limited_retry_back_off``: a Retry-After style
  reset header) over ``wait_random_exponential`` (Envoy's fully jittered back-off: base
  ``base_interval``, 25 ms by default, capped at ``max_interval``, 10x base);
- stop: ``stop_after_attempt(num_retries + 1)`` ``|`` :class:`stop_before_deadline` (the
  back-off would end past the call's deadline) ``|`` :class:`stop_without_retry_admission`
  (the cluster's retry budget / max_retries refuse; last, as it takes the slot), built
  flat as ``stop_any(...)``.

tenacity runs wait before stop, so the deadline check sees the back-off it would sleep.
The loop that drives the decision (:class:`~meshlib.resilience.retry.AttemptLoop`) is
the :class:`RetryContext` the stop objects read.
"""

from __future__ import annotations

import contextlib
import email.utils
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, cast

import tenacity
from tenacity import retry_base, stop_after_attempt, wait_random_exponential
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from xds_client.resources.route import RetryPolicy

from .._call import Call
from .._outcome import Outcome, OutcomeKind
from ..routing._matchers import compile_header

__all__ = [
    "GRPC_RETRY_CODES",
    "AttemptState",
    "CompiledRetry",
    "Result",
    "RetryContext",
    "retry_if_retry_on",
    "retry_unless_route_timeout",
    "stop_before_deadline",
    "stop_without_retry_admission",
    "wait_reset_header",
]

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


class RetryContext(Protocol):
    """What the stop objects ask of the call being retried (the attempt loop)."""

    def time_left(self) -> float | None:
        """Seconds until the call's deadline; None: no deadline."""
        ...

    def take_retry_slot(self) -> bool:
        """Admit one more retry under the cluster's retry budget / max_retries (the slot
        is held until the retry's attempt is recorded); False: refused."""
        ...


class AttemptState(tenacity.RetryCallState):
    """tenacity's state of one call's retries. Its result is the last try's
    :data:`Result` (also kept as ``result``: meshlib's objects read it without the
    Future's lock); ``final_timeout`` says that try's timeout was the call's deadline."""

    def __init__(self, retrying: tenacity.Retrying, context: RetryContext) -> None:
        super().__init__(retrying, None, (), {})
        self.context = context
        self.final_timeout = False
        self.result: Result = (Outcome(OutcomeKind.LOCAL), {})

    def record(self, result: Result, final_timeout: bool) -> None:
        """The try's result, as tenacity's ``set_result``."""
        self.result, self.final_timeout = result, final_timeout
        self.set_result(result)


def _state(retry_state: tenacity.RetryCallState) -> AttemptState:
    return cast(AttemptState, retry_state)


def _result(retry_state: tenacity.RetryCallState) -> Result:
    return cast(AttemptState, retry_state).result


class retry_if_retry_on(retry_base):
    """Retry when Envoy's ``retry_on`` conditions hold for the try's outcome."""

    def __init__(self, policy: CompiledRetry) -> None:
        self.policy = policy

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        outcome, headers = _result(retry_state)
        return self.policy.retriable(outcome, headers)


class retry_unless_route_timeout(retry_base):
    """No retry when a try timed out at the call's own deadline (Envoy answers 504)."""

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        outcome, _ = _result(retry_state)
        return not (outcome.kind is OutcomeKind.TIMEOUT and _state(retry_state).final_timeout)


class stop_before_deadline(stop_base):
    """Stop when the upcoming back-off would reach the call's deadline."""

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        left = _state(retry_state).context.time_left()
        return left is not None and retry_state.upcoming_sleep >= left


class stop_without_retry_admission(stop_base):
    """Stop when the cluster refuses a retry (retry budget, max_retries). Compose it
    last: it takes the retry's slot when it lets the retry go."""

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return not _state(retry_state).context.take_retry_slot()


class wait_reset_header(wait_base):
    """``rate_limited_retry_back_off``: the interval a reset header gives (Retry-After
    style), else the ``otherwise`` wait."""

    def __init__(self, policy: CompiledRetry, otherwise: wait_base) -> None:
        self.policy = policy
        self.otherwise = otherwise

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        _, headers = _result(retry_state)
        delay = self.policy.rate_limited_delay(headers) if headers else None
        return self.otherwise(retry_state) if delay is None else delay


def _give_up(retry_state: tenacity.RetryCallState) -> None:
    """retry_error_callback: a stopped loop ends the call with the last try's result."""
    return None


class _HeaderView:
    """Response headers seen through the request-header matchers' Call interface."""

    __slots__ = ("headers",)

    def __init__(self, headers: Mapping[str, str]) -> None:
        self.headers = headers


class CompiledRetry:
    """A RetryPolicy compiled once per Snapshot: what is retriable, the ``Retrying`` that
    decides each retry (see the module docstring), the per-try timeout and the host
    selection bound (previous_hosts, host_selection_retry_max_attempts)."""

    __slots__ = (
        "_grpc_codes",
        "_on_connect",
        "_on_failure",
        "_on_refused",
        "_response_headers",
        "_status",
        "per_try_timeout",
        "policy",
        "previous_hosts",
        "request_headers",
        "reselections",
        "retrying",
    )

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        on = policy.retry_on
        self._grpc_codes = frozenset(c for name, c in GRPC_RETRY_CODES.items() if name in on)
        self._status: Callable[[int], bool] = _status_predicate(policy)
        self._on_failure = bool(on & {"5xx", "gateway-error", "reset"})
        self._on_connect = bool(on & {"connect-failure", "reset-before-request"})
        self._on_refused = "refused-stream" in on
        self._response_headers = (
            tuple(compile_header(m) for m in policy.retriable_headers)
            if "retriable-headers" in on
            else ()
        )
        self.request_headers = tuple(compile_header(m) for m in policy.retriable_request_headers)
        self.per_try_timeout = policy.per_try_timeout
        self.previous_hosts = policy.previous_hosts
        self.reselections = policy.host_selection_max_attempts
        jittered = wait_random_exponential(
            multiplier=policy.base_interval, max=policy.max_interval, exp_base=2
        )
        self.retrying = tenacity.Retrying(
            retry=retry_unless_route_timeout() & retry_if_retry_on(self),
            wait=wait_reset_header(self, jittered),
            # stop_any(a, b, c) is a | b | c without the nesting (one any() per decision)
            stop=tenacity.stop_any(
                stop_after_attempt(policy.num_retries + 1),
                stop_before_deadline(),
                stop_without_retry_admission(),
            ),
            retry_error_callback=_give_up,
        )

    def applies_to(self, call: Call) -> bool:
        """retriable_request_headers: when set, only matching requests are retried."""
        return not self.request_headers or any(m(call) for m in self.request_headers)

    def retriable(self, outcome: Outcome, headers: Mapping[str, str] | None = None) -> bool:
        """Envoy's retry_on conditions for one attempt's outcome and response headers."""
        kind = outcome.kind
        if kind is OutcomeKind.RESPONSE:
            if outcome.grpc_status is not None and outcome.grpc_status in self._grpc_codes:
                return True
            if outcome.status is not None and self._status(outcome.status):
                return True
            if not self._response_headers:
                return False
            view: Any = _HeaderView(headers if headers is not None else {})
            return any(m(view) for m in self._response_headers)
        if kind in _FAILURE_KINDS:
            if self._on_failure:  # 5xx, gateway-error and reset cover every reset
                return True
            if kind is OutcomeKind.CONNECT_FAILURE:
                return self._on_connect
            return outcome.refused and self._on_refused
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
    # envoy-ratelimited: only Envoy's own rate limit filter sets x-envoy-ratelimited
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
