"""The HTTP fault filter: delays and aborts, by percentage or request header, bounded by
``max_active_faults``. A sans-I/O decision; the adapter sleeps and answers locally."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

from xds_client.resources.route import FaultConfig, Percent

from .._call import Call
from ..routing._matchers import compile_header

__all__ = ["FaultDecision", "FaultInjector"]

DELAY_HEADER = "x-envoy-fault-delay-request"
DELAY_PERCENT_HEADER = "x-envoy-fault-delay-request-percentage"
ABORT_HEADER = "x-envoy-fault-abort-request"
ABORT_GRPC_HEADER = "x-envoy-fault-abort-grpc-request"
ABORT_PERCENT_HEADER = "x-envoy-fault-abort-request-percentage"


def _header_int(call: Call, name: str) -> int | None:
    value = call.headers.get(name)
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def _sample(percent: Percent, call: Call, header: str | None) -> bool:
    numerator = percent.numerator
    if header is not None:  # header-controlled faults: the header lowers the share
        asked = _header_int(call, header)
        if asked is not None and asked >= 0:
            numerator = min(numerator, asked)
    return numerator > 0 and random.randrange(percent.denominator) < numerator


@dataclass(slots=True)
class FaultDecision:
    """What the fault filter does to one call: wait ``delay`` seconds, then (maybe) answer
    locally with ``http_status`` or ``grpc_status``. Call ``release()`` when it ends."""

    delay: float
    http_status: int | None
    grpc_status: int | None
    _owner: FaultInjector | None

    @property
    def aborts(self) -> bool:
        return self.http_status is not None or self.grpc_status is not None

    def release(self) -> None:
        if self._owner is not None:
            self._owner._release()
            self._owner = None


class FaultInjector:
    """One compiled HTTPFault config; counts its active faults across calls."""

    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        self._headers = tuple(compile_header(h) for h in config.headers)
        self._lock = threading.Lock()
        self.active = 0

    def decide(self, call: Call, cluster: str) -> FaultDecision | None:
        """The fault for ``call`` routed to ``cluster``, or None."""
        c = self.config
        if c.upstream_cluster and c.upstream_cluster != cluster:
            return None
        if not all(m(call) for m in self._headers):
            return None
        delay = 0.0
        if c.delay is not None:
            d = c.delay
            if d.header:
                ms = _header_int(call, DELAY_HEADER)
                if ms is not None and ms > 0 and _sample(d.percent, call, DELAY_PERCENT_HEADER):
                    delay = ms / 1000
            elif d.fixed and _sample(d.percent, call, None):
                delay = d.fixed
        http = grpc = None
        if c.abort is not None:
            a = c.abort
            if a.header:
                http = _header_int(call, ABORT_HEADER)
                http = http if http is not None and 200 <= http < 600 else None
                grpc = None if http is not None else _header_int(call, ABORT_GRPC_HEADER)
                if (http is not None or grpc is not None) and not _sample(
                    a.percent, call, ABORT_PERCENT_HEADER
                ):
                    http = grpc = None
            elif _sample(a.percent, call, None):
                http, grpc = a.http_status, a.grpc_status
        if not delay and http is None and grpc is None:
            return None
        with self._lock:
            if c.max_active_faults is not None and self.active >= c.max_active_faults:
                return None
            self.active += 1
        return FaultDecision(delay, http, grpc, self)

    def _release(self) -> None:
        with self._lock:
            self.active -= 1
