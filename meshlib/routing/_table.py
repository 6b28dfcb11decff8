"""RouteTable: a RouteConfiguration compiled once per Snapshot. ``route(call)`` selects a
virtual host by domain and walks its routes once, first match wins."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import re2

from xds_client.resources.route import (
    FaultConfig,
    HeaderMutations,
    LocalRateLimitConfig,
    MaxStreamDuration,
    RouteAction,
    RouteConfigResource,
    RouteEntry,
    RouteMatch,
    VirtualHost,
)

from .._call import Call
from ..exchange._ratelimit import LocalRateLimiter
from ..local_reply import LocalReply
from ..resilience.fault import FaultInjector
from ..resilience.mirror import Mirrors
from ..resilience.retry_policy import CompiledRetry
from ..resilience.timeouts import RouteTimeout, is_grpc
from ._headers import MutationChain
from ._local import LocalAnswer, compile_local
from ._matchers import compile_fraction, compile_header, compile_query, query_params
from ._plan import Chooser, ClusterChoice, Rewrite, RoutePlan, compile_hash, compile_rewrite

__all__ = ["RouteTable", "compile_route_config"]

Check = Callable[[Call], bool]
_MEMO_SIZE = 1024  # host names remembered per route table
_UNSEEN: Any = object()


def _path_matcher(m: RouteMatch) -> Callable[[str], bool]:
    if m.kind == "safe_regex":
        fullmatch = re2.compile(m.value).fullmatch
        return lambda p: fullmatch(p) is not None
    value = m.value if m.case_sensitive else m.value.lower()
    fold: Callable[[str], str] = (lambda p: p) if m.case_sensitive else str.lower
    if m.kind == "prefix":
        if not value:
            return lambda p: True
        return lambda p: fold(p).startswith(value)
    if m.kind == "path":
        return lambda p: fold(p) == value
    # path_separated_prefix: the prefix, then end of path or '/'
    n = len(value)
    return lambda p: fold(p).startswith(value) and (len(p) == n or p[n] == "/")


def compile_match(m: RouteMatch) -> tuple[str | None, Callable[[str], bool], tuple[Check, ...]]:
    """``(prefix, path_test, checks)``: a case-sensitive prefix (the common case, tested
    inline by the walk) or else a path test; then the header, query, gRPC and runtime
    fraction checks, all of which must pass."""
    prefix = m.value if m.kind == "prefix" and m.case_sensitive else None
    checks: list[Check] = [compile_header(h) for h in m.headers]
    if m.grpc:
        checks.append(is_grpc)
    if m.query_parameters:
        queries = tuple(compile_query(q) for q in m.query_parameters)

        def query_ok(call: Call) -> bool:
            params = query_params(call.path)
            return all(q(params) for q in queries)

        checks.append(query_ok)
    if m.runtime_fraction is not None:
        sample = compile_fraction(m.runtime_fraction)
        checks.append(lambda _call: sample())
    return prefix, _path_matcher(m), tuple(checks)


@dataclass(frozen=True, slots=True)
class _Action:
    chooser: Chooser
    cluster_header: str
    header_choice: ClusterChoice | None  # template for cluster_header routes
    rewrite: Rewrite | None
    host_rewrite: str
    timeout: RouteTimeout  # route timeout, max_stream_duration, grpc_timeout_header_max
    max_stream_duration: MaxStreamDuration | None
    priority: str
    ratelimit: LocalRateLimiter | None
    retry: CompiledRetry | None
    hash_key: Callable[[Call], int | None] | None
    mirrors: Mirrors
    plan: RoutePlan | None  # the plan of every call, when nothing in it depends on the call
    template: RoutePlan | None  # the same but for a per-call (gRPC deadline) timeout
    by_timeout: dict[float | None, RoutePlan]  # template's plans, per timeout (bounded)


class _CompiledRoute(NamedTuple):  # a tuple: the walk unpacks it, cheaper than attributes
    name: str
    prefix: str | None  # a case-sensitive prefix match, tested inline
    path_test: Callable[[str], bool]  # any other path specifier
    checks: tuple[Check, ...]  # headers, query parameters, gRPC, runtime fraction
    action: _Action | LocalAnswer | None  # a direct response / redirect; None: no route


class _Compiler:
    """Compiles one RouteConfiguration; fault injectors are shared per config object."""

    def __init__(
        self,
        config: RouteConfigResource,
        base_fault: FaultConfig | None,
        base_ratelimit: LocalRateLimitConfig | None = None,
    ) -> None:
        self.config = config
        self.base_fault = base_fault
        self.base_ratelimit = base_ratelimit
        self._faults: dict[int, FaultInjector] = {}
        self._limiters: dict[int, LocalRateLimiter] = {}
        self._retries: dict[int, CompiledRetry] = {}

    def fault(self, *configs: FaultConfig | None) -> FaultInjector | None:
        """The most specific fault override wins (weighted cluster, route, vhost, config)."""
        for c in configs:
            if c is not None:
                if c.delay is None and c.abort is None:
                    return None  # overrides the less specific ones with no fault at all
                return self._faults.setdefault(id(c), FaultInjector(c))
        return None

    def ratelimit(self, *configs: LocalRateLimitConfig | None) -> LocalRateLimiter | None:
        """The most specific local rate limit config (route, vhost, config, listener)
        wins; one bucket per config object, shared by the routes it covers."""
        for c in configs:
            if c is not None:
                if c.bucket is None:
                    return None
                found = self._limiters.get(id(c))
                if found is None:
                    found = self._limiters[id(c)] = LocalRateLimiter(c)
                return found
        return None

    def vhost(self, vh: VirtualHost) -> tuple[_CompiledRoute, ...]:
        return tuple(self.route(vh, r) for r in vh.routes)

    def route(self, vh: VirtualHost, r: RouteEntry) -> _CompiledRoute:
        action: _Action | LocalAnswer | None
        if r.action is not None:
            action = self.action(vh, r, r.action)
        else:
            cfg = self.config
            chain = MutationChain(
                (r.mutations, vh.mutations, cfg.mutations), cfg.most_specific_header_mutations_wins
            )
            limiter = self.ratelimit(r.ratelimit, vh.ratelimit, cfg.ratelimit, self.base_ratelimit)
            action = compile_local(r.match, chain, r.direct_response, r.redirect, limiter)
        return _CompiledRoute(r.name, *compile_match(r.match), action)

    def action(self, vh: VirtualHost, r: RouteEntry, a: RouteAction) -> _Action:
        cfg = self.config
        wins = cfg.most_specific_header_mutations_wins
        outer = (r.mutations, vh.mutations, cfg.mutations)

        def choice(
            name: str,
            w_mut: HeaderMutations | None = None,
            host: str = "",
            fault: FaultConfig | None = None,
        ) -> ClusterChoice:
            levels = (w_mut, *outer) if w_mut is not None else outer
            return ClusterChoice(
                name,
                MutationChain(levels, wins),
                host,
                self.fault(fault, r.fault, vh.fault, cfg.fault, self.base_fault),
            )

        if a.weighted_clusters:
            choices = [
                choice(w.name, w.mutations, w.host_rewrite_literal, w.fault)
                for w in a.weighted_clusters
            ]
            chooser = Chooser(choices, [w.weight for w in a.weighted_clusters])
        else:
            only = choice(a.cluster or "")
            chooser = Chooser([only], [1])
        policy = a.retry_policy if a.retry_policy is not None else vh.retry_policy
        retry = None
        if policy is not None:
            retry = self._retries.setdefault(id(policy), CompiledRetry(policy))
        rewrite = compile_rewrite(r.match, a.prefix_rewrite, a.regex_rewrite)
        timeout = RouteTimeout(a.timeout, a.max_stream_duration)
        hash_key = compile_hash(a.hash_policy)
        mirrors = Mirrors(a.mirror_policies or vh.mirror_policies)
        limiter = self.ratelimit(r.ratelimit, vh.ratelimit, cfg.ratelimit, self.base_ratelimit)
        template = None
        if (
            len(chooser.choices) == 1
            and not a.cluster_header
            and rewrite is None
            and hash_key is None
            and not mirrors
        ):
            only_choice = chooser.choices[0]
            template = RoutePlan(
                r.name,
                only_choice.name,
                timeout.fixed,
                None,
                (only_choice.host_rewrite or a.host_rewrite_literal) or None,
                only_choice.headers,
                retry,
                None,
                only_choice.fault,
                (),
                a.max_stream_duration,
                a.priority,
                limiter,
            )
        return _Action(
            chooser,
            a.cluster_header,
            chooser.choices[0] if a.cluster_header else None,
            rewrite,
            a.host_rewrite_literal,
            timeout,
            a.max_stream_duration,
            a.priority,
            limiter,
            retry,
            hash_key,
            mirrors,
            None if timeout.per_call else template,
            template,
            {},
        )


class RouteTable:
    """A compiled RouteConfiguration. ``route(call)`` walks one virtual host.

    ``base_fault`` is the listener's HTTP fault filter config (HCM level), overridden by
    any typed_per_filter_config of the route config, virtual host, route or cluster;
    ``base_ratelimit`` the listener's local rate limit config, likewise (not per cluster).
    """

    def __init__(
        self,
        config: RouteConfigResource,
        base_fault: FaultConfig | None = None,
        base_ratelimit: LocalRateLimitConfig | None = None,
    ) -> None:
        self.name = config.name
        self.config = config
        compiler = _Compiler(config, base_fault, base_ratelimit)
        self.limiters = compiler._limiters  # every local rate limiter, by config object
        self._exact: dict[str, tuple[_CompiledRoute, ...]] = {}
        self._suffix: list[tuple[str, tuple[_CompiledRoute, ...]]] = []
        self._prefix: list[tuple[str, tuple[_CompiledRoute, ...]]] = []
        self._any: tuple[_CompiledRoute, ...] | None = None
        self._memo: dict[str, tuple[_CompiledRoute, ...] | None] = {}
        for vh in config.virtual_hosts:
            routes = compiler.vhost(vh)
            for domain in vh.domains:
                d = domain.lower()
                if d == "*":
                    self._any = self._any if self._any is not None else routes
                elif d.startswith("*"):
                    self._suffix.append((d[1:], routes))
                elif d.endswith("*"):
                    self._prefix.append((d[:-1], routes))
                else:
                    self._exact.setdefault(d, routes)
        # Envoy: the longest wildcard wins.
        self._suffix.sort(key=lambda e: -len(e[0]))
        self._prefix.sort(key=lambda e: -len(e[0]))

    def virtual_host(self, host: str) -> tuple[_CompiledRoute, ...] | None:
        """Envoy's order: exact, then suffix wildcard, then prefix wildcard, then ``*``.
        Remembered per host name (a bounded memo: the usual few hosts are one lookup)."""
        memo = self._memo
        found = memo.get(host, _UNSEEN)  # one read: another thread may clear the memo
        if found is not _UNSEEN:
            return found  # type: ignore[no-any-return]
        if len(memo) >= _MEMO_SIZE:
            memo.clear()
        routes = memo[host] = self._select(host)
        return routes

    def _select(self, host: str) -> tuple[_CompiledRoute, ...] | None:
        h = host.lower()
        routes = self._exact.get(h)
        if routes is not None:
            return routes
        for suffix, routes in self._suffix:
            if len(h) > len(suffix) and h.endswith(suffix):
                return routes
        for prefix, routes in self._prefix:
            if len(h) > len(prefix) and h.startswith(prefix):
                return routes
        return self._any

    def route(self, call: Call) -> RoutePlan | None:
        """The plan for ``call``, or None when no route matches (Envoy: 404) or the
        matching route does not forward, or its cluster_header is absent."""
        found = self.route_or_reply(call)
        return found if found is None or found.__class__ is RoutePlan else None

    def route_or_reply(self, call: Call) -> RoutePlan | LocalReply | None:
        """As :meth:`route` (one walk), but a matching ``direct_response`` or
        ``redirect`` route gives its answer."""
        host = call.headers.get("host") or call.authority
        routes = self._memo.get(host, _UNSEEN)
        if routes is _UNSEEN:
            routes = self.virtual_host(host)
        if routes is None:
            return None
        full = call.path
        path = full.partition("?")[0]
        for name, prefix, path_test, checks, action in routes:  # one walk, first match wins
            if prefix is not None:
                if not path.startswith(prefix):
                    continue
            elif not path_test(path):
                continue
            if checks and not all(check(call) for check in checks):
                continue
            if action is None:
                return None
            if action.__class__ is LocalAnswer:
                return action.reply(call, path, full)
            return _plan(name, action, call, path, full)
        return None


def _plan(name: str, a: _Action, call: Call, path: str, full: str) -> RoutePlan | None:
    """The plan for a matched route: the route's own when it does not depend on the call;
    ``path`` is the call's path without the query, ``full`` with it."""
    plan = a.plan
    if plan is not None:
        return plan
    template = a.template
    if template is not None:  # only the timeout depends on the call: one plan per value
        timeout = a.timeout.of(call)
        plans = a.by_timeout
        plan = plans.get(timeout)
        if plan is None:
            if len(plans) >= _MEMO_SIZE:
                plans.clear()
            plan = plans[timeout] = template.with_timeout(timeout)
        return plan
    if a.header_choice is not None:
        cluster = call.headers.get(a.cluster_header)
        if not cluster:
            return None
        chosen = ClusterChoice(cluster, a.header_choice.headers, "", a.header_choice.fault)
    else:
        chosen = a.chooser.choose()
    host = chosen.host_rewrite or a.host_rewrite
    return RoutePlan(
        name,
        chosen.name,
        a.timeout.of(call),
        a.rewrite(path) + full[len(path) :] if a.rewrite is not None else None,
        host or None,
        chosen.headers,
        a.retry,
        a.hash_key(call) if a.hash_key is not None else None,
        chosen.fault,
        a.mirrors.select() if a.mirrors else (),
        a.max_stream_duration,
        a.priority,
        a.ratelimit,
    )


def compile_route_config(config: RouteConfigResource) -> RouteTable:
    return RouteTable(config)
