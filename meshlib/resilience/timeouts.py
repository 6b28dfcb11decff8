"""Timeouts: the route timeout (covering every attempt), gRPC's grpc-timeout header under
``max_stream_duration``, per-try timeouts, and the call's deadline."""

from __future__ import annotations

import time
from collections.abc import Callable

from xds_client.resources.route import MaxStreamDuration

from .._call import Call

__all__ = [
    "DEFAULT_ROUTE_TIMEOUT",
    "Deadline",
    "RouteTimeout",
    "format_grpc_timeout",
    "is_grpc",
    "parse_grpc_timeout",
    "per_try_timeout",
    "route_timeout",
]

#: Envoy's route timeout when a route sets none; an explicit 0 disables it.
DEFAULT_ROUTE_TIMEOUT = 15.0
_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def is_grpc(call: Call) -> bool:
    return (call.headers.get("content-type") or "").startswith("application/grpc")


def parse_grpc_timeout(value: str | None) -> float | None:
    """A ``grpc-timeout`` header value (``TimeoutValue TimeoutUnit``) in seconds."""
    if not value or len(value) < 2 or len(value) > 9:
        return None
    digits, unit = value[:-1], value[-1]
    if not digits.isdigit() or unit not in _UNITS:
        return None
    return int(digits) * _UNITS[unit]


def format_grpc_timeout(seconds: float) -> str:
    """``seconds`` as a grpc-timeout header value (milliseconds, at most 8 digits)."""
    return f"{min(max(0, round(seconds * 1000)), 99_999_999)}m"


def route_timeout(timeout: float | None, mds: MaxStreamDuration | None, call: Call) -> float | None:
    """The overall timeout of ``call`` in seconds, or None for no limit.

    ``timeout`` is RouteAction.timeout as decoded (None: unset -> 15 s; 0: no limit).
    With ``grpc_timeout_header_max`` set, a gRPC call's deadline (``Call.timeout``, else
    its ``grpc-timeout`` header), minus ``grpc_timeout_header_offset`` and capped at the
    max (0 = uncapped), replaces it, as in Envoy's router; ``max_stream_duration`` caps
    the result.
    """
    return RouteTimeout(timeout, mds).of(call)


class RouteTimeout:
    """A route's timeout rule, compiled once per Snapshot: ``fixed`` is the answer for
    every call unless ``per_call`` (gRPC deadlines under ``grpc_timeout_header_max``),
    when :meth:`of` works it out from the call."""

    __slots__ = ("_cap", "_header_max", "_offset", "fixed", "per_call")

    def __init__(self, timeout: float | None, mds: MaxStreamDuration | None) -> None:
        base = DEFAULT_ROUTE_TIMEOUT if timeout is None else (timeout or None)
        self._cap = mds.max_stream_duration if mds is not None else None
        self._header_max = mds.grpc_timeout_header_max if mds is not None else None
        self._offset = (mds.grpc_timeout_header_offset or 0.0) if mds is not None else 0.0
        self.per_call = self._header_max is not None
        self.fixed = self._capped(base)

    def _capped(self, result: float | None) -> float | None:
        cap = self._cap
        if cap:
            return cap if result is None else min(result, cap)
        return result

    def of(self, call: Call) -> float | None:
        """The overall timeout of ``call`` (see :func:`route_timeout`)."""
        if not self.per_call:
            return self.fixed
        if not (call.headers.get("content-type") or "").startswith("application/grpc"):
            return self.fixed  # not a gRPC call (is_grpc, inline)
        grpc = call.timeout
        if grpc is None:
            grpc = parse_grpc_timeout(call.headers.get("grpc-timeout")) or 0.0
        offset = self._offset
        if offset and offset < grpc:
            grpc -= offset
        cap = self._header_max
        if cap and (grpc <= 0 or grpc > cap):
            grpc = cap
        return self._capped(grpc if grpc > 0 else None)


def per_try_timeout(per_try: float | None, overall: float | None) -> float | None:
    """Envoy ignores a per-try timeout that is not shorter than the route timeout."""
    if per_try is None or (overall is not None and per_try >= overall):
        return None
    return per_try


class Deadline:
    """When the whole call (every attempt and back-off) must be done."""

    __slots__ = ("at", "clock")

    def __init__(self, at: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.at = at  # monotonic seconds; None: no limit
        self.clock = clock

    @classmethod
    def after(cls, timeout: float | None, clock: Callable[[], float] = time.monotonic) -> Deadline:
        return cls(None if timeout is None else clock() + timeout, clock)

    def remaining(self) -> float | None:
        return None if self.at is None else self.at - self.clock()
