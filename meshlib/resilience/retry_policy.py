"""Retry policies compiled once per Snapshot: Envoy's ``retry_on`` conditions over an
attempt's :class:`~meshlib._outcome.Outcome`, tenacity's stop and wait for the back-off
(``stop_after_attempt``, ``wait_random_exponential``), and the rate-limited back-off
(Retry-After style reset headers)."""

from __future__ import annotations

import contextlib
import email.utils
import time
from collections.abc import Callable, Mapping
from typing import Any

import tenacity
from tenacity import stop_after_attempt, wait_random_exponential

from xds_client.resources.route import RetryPolicy

from .._call import Call
from .._outcome import Outcome, OutcomeKind
from ..routing._matchers import compile_header

__all__ = ["GRPC_RETRY_CODES", "CompiledRetry", "Result"]

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
    wait, the rate-limited (Retry-After style) back-off and the host selection bound."""

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
        self.retrying = tenacity.Retrying(
            stop=stop_after_attempt(policy.num_retries + 1),
            wait=wait_random_exponential(
                multiplier=policy.base_interval, max=policy.max_interval, exp_base=2
            ),
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
