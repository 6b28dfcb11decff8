"""The routing decision for one call (RoutePlan) and the per-route pieces that produce it:
cluster choice, path and host rewrites, and the hash key for consistent-hash balancers."""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import re2

from xds_client.resources.route import HashPolicy, MaxStreamDuration, RouteMatch

from .._call import Call
from ..balancing import xxhash64
from ..exchange._ratelimit import LocalRateLimiter
from ..resilience.fault import FaultInjector
from ..resilience.mirror import MirrorTarget
from ..resilience.retry_policy import CompiledRetry
from ._headers import MutationChain
from ._matchers import header_value, query_params

__all__ = ["ClusterChoice", "RoutePlan", "compile_hash", "compile_rewrite"]

_NO_HEADERS = MutationChain((), False)


class RoutePlan:
    """The routing decision for one call.

    ``timeout`` is the overall timeout covering every attempt (None: no limit);
    ``path``/``authority`` are the rewritten ``:path`` (with query) and Host, or None when
    unchanged; ``headers`` the mutations to apply; ``retry`` the compiled retry policy;
    ``hash_key`` feeds consistent-hash balancers; ``priority`` picks the cluster's
    circuit-breaker thresholds (DEFAULT or HIGH); ``fault`` and ``mirrors`` are decided
    per call (fault filter, shadow traffic).

    Immutable by contract: a route whose decision does not depend on the call hands the
    same plan to every call (a plain slotted class, cheaper to build than a frozen
    dataclass).
    """

    __slots__ = (
        "authority",
        "cluster",
        "fault",
        "hash_key",
        "headers",
        "max_stream_duration",
        "mirrors",
        "path",
        "priority",
        "ratelimit",
        "retry",
        "route_name",
        "timeout",
    )

    def __init__(
        self,
        route_name: str,
        cluster: str,
        timeout: float | None,
        path: str | None = None,
        authority: str | None = None,
        headers: MutationChain = _NO_HEADERS,
        retry: CompiledRetry | None = None,
        hash_key: int | None = None,
        fault: FaultInjector | None = None,
        mirrors: tuple[MirrorTarget, ...] = (),
        max_stream_duration: MaxStreamDuration | None = None,
        priority: str = "DEFAULT",
        ratelimit: LocalRateLimiter | None = None,
    ) -> None:
        self.route_name = route_name
        self.cluster = cluster
        self.timeout = timeout
        self.path = path
        self.authority = authority
        self.headers = headers
        self.retry = retry
        self.hash_key = hash_key
        self.fault = fault
        self.mirrors = mirrors
        self.max_stream_duration = max_stream_duration
        self.priority = priority
        self.ratelimit = ratelimit  # the local rate limit filter that applies, if any

    def with_timeout(self, timeout: float | None) -> RoutePlan:
        """This plan with another overall timeout."""
        return RoutePlan(
            self.route_name,
            self.cluster,
            timeout,
            self.path,
            self.authority,
            self.headers,
            self.retry,
            self.hash_key,
            self.fault,
            self.mirrors,
            self.max_stream_duration,
            self.priority,
            self.ratelimit,
        )

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in _PLAN_FIELDS)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, RoutePlan)
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in _PLAN_FIELDS[:-1])
        return f"RoutePlan({shown})"


_PLAN_FIELDS = (
    "route_name",
    "cluster",
    "timeout",
    "path",
    "authority",
    "headers",
    "retry",
    "hash_key",
    "fault",
    "mirrors",
    "priority",
    "ratelimit",
    "max_stream_duration",
)


@dataclass(frozen=True, slots=True)
class ClusterChoice:
    """One cluster a route can send to, with what applies when it is chosen."""

    name: str
    headers: MutationChain
    host_rewrite: str
    fault: FaultInjector | None


class Chooser:
    """Picks the cluster of a route: fixed, or by weight."""

    __slots__ = ("choices", "cumulative")

    def __init__(self, choices: Sequence[ClusterChoice], weights: Sequence[int]) -> None:
        self.choices = tuple(choices)
        self.cumulative = list(itertools.accumulate(weights))

    def choose(self) -> ClusterChoice:
        if len(self.choices) == 1:
            return self.choices[0]
        point = random.random() * self.cumulative[-1]
        return self.choices[bisect.bisect_right(self.cumulative, point)]


Rewrite = Callable[[str], str]


def compile_rewrite(
    match: RouteMatch, prefix_rewrite: str | None, regex_rewrite: tuple[str, str] | None
) -> Rewrite | None:
    """A function from the path (without query) to the rewritten path, or None."""
    if prefix_rewrite is not None:
        n = len(match.value)
        return lambda p: prefix_rewrite + p[n:]
    if regex_rewrite is not None:
        pattern = re2.compile(regex_rewrite[0])
        # Envoy's substitution uses \1; RE2 (and Python) agree on that syntax.
        substitution = regex_rewrite[1]
        return lambda p: str(pattern.sub(substitution, p))
    return None


_MASK = (1 << 64) - 1


def _hash64(value: str) -> int:
    # Envoy hashes hash-policy values with xxHash64, so the same key reaches the same
    # endpoint through meshlib as through Envoy (ring hash and Maglev alike).
    return xxhash64(value)


def _cookie(call: Call, name: str) -> str | None:
    header = call.headers.get("cookie")
    if not header:
        return None
    for part in header.split(";"):
        k, sep, v = part.strip().partition("=")
        if sep and k == name:
            return v.strip('"')
    return None


def _value_getter(p: HashPolicy) -> Callable[[Call], str | None]:
    if p.kind == "header":
        name = p.name
        if p.regex_rewrite is not None:
            pattern, sub = re2.compile(p.regex_rewrite[0]), p.regex_rewrite[1]

            def rewritten(call: Call) -> str | None:
                v = header_value(call, name)
                return None if v is None else str(pattern.sub(sub, v))

            return rewritten
        return lambda call: header_value(call, name)
    if p.kind == "cookie":
        return lambda call: _cookie(call, p.name)
    if p.kind == "source_ip":
        return lambda call: call.source_ip or None
    if p.kind == "query_parameter":
        return lambda call: query_params(call.path).get(p.name)
    return lambda call: None  # filter_state: no filter state in a client


def compile_hash(policies: Sequence[HashPolicy]) -> Callable[[Call], int | None] | None:
    """Envoy's hash policy: each policy that yields a value is hashed and folded in
    (rotate left one bit, xor); a terminal policy that yields a value ends the walk."""
    if not policies:
        return None
    steps = tuple((_value_getter(p), p.terminal) for p in policies)

    def hash_key(call: Call) -> int | None:
        result: int | None = None
        for get, terminal in steps:
            value = get(call)
            if value is None:
                continue
            h = _hash64(value)
            result = h if result is None else (((result << 1) | (result >> 63)) & _MASK) ^ h
            if terminal:
                break
        return result

    return hash_key
