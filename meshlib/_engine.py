"""The engine: sans-I/O routing, policy and endpoint decisions that every client adapter
drives (httpx sync and async, grpcio sync and aio).

The client is a stack of layers, outermost first; each adds one concern (``STACK``).

Adapter contract — how a client library's adapter carries one request:

1. **Resolve.** ``engine.listener(authority)`` returns a ``ListenerView``, or a
   ``threading.Event`` to wait on (sync: ``event.wait``; async: in a worker thread), then
   ``engine.resolved(authority)``. A view with ``missing`` set is not a mesh host.
2. **Call.** Build a :class:`~meshlib.Call`: ``authority`` (``host:port`` dialled),
   ``method``, ``path`` (with query), lower-case ``headers`` (for gRPC:
   ``content-type: application/grpc`` and ``grpc-timeout`` when the caller set a deadline,
   and that deadline as ``timeout`` seconds, which routing reads instead of the header).
3. **Plan.** ``plan = engine.route(view, call)`` walks the route table once:
   cluster (fixed, weighted, or by header), rewrites (``plan.path``, ``plan.authority``),
   header mutations (``plan.headers.request(list)`` / ``.response(list)`` on
   ``(name, value)`` lists), overall ``plan.timeout``, retry policy, hash key, mirrors.
   Raises ``RouteNotFound`` / ``TargetNotResolved``.
4. **Fault.** ``fault = engine.fault(plan, call)``: if not None, wait ``fault.delay``
   seconds, then if ``fault.aborts`` answer locally with ``fault.http_status`` (or a gRPC
   status ``fault.grpc_status``) without sending; always ``fault.release()`` at the end.
5. **Mirror.** For each ``target`` in ``plan.mirrors``: ``engine.mirror_endpoint(target,
   call)`` and send a copy with Host ``target.authority(host)`` in the background; never
   wait for it, ignore its result.
6. **Attempts.** ``loop = engine.attempts(plan, call, replayable=..., deadline=...)``
   after the fault delay (the route timeout starts here; ``replayable`` is False when the
   body cannot be sent twice: no retries; ``deadline``, monotonic seconds, is the
   caller's own deadline when earlier; ``loop.cap(at)`` can bring it forward later).
   Repeat:
   ``attempt = loop.next_attempt()`` (the first try draws the cluster's drop_overloads;
   admission, LB pick avoiding previous hosts; raises ``UpstreamTimeout``,
   ``NoHealthyUpstream``, ``CircuitBreakerOpen``, ``RequestDropped`` -- the last two are
   ``Overloaded``: Envoy's local 503, gRPC UNAVAILABLE), send to ``attempt.endpoint``
   within ``attempt.timeout`` seconds (None: no limit), turn the result into an
   :class:`~meshlib._outcome.Outcome` (``RESPONSE`` with status and ``grpc_status`` from
   headers/trailers-only, ``CONNECT_FAILURE``, ``RESET`` -- with ``refused=True`` for an
   HTTP/2 REFUSED_STREAM --, ``TIMEOUT``), then
   ``delay = loop.record(attempt, outcome, response_headers)``. None:
   the call is over — hand this result (response or error) to the application after
   ``plan.headers.response(...)``. Otherwise discard the response, sleep ``delay`` and go
   again. ``loop.close()`` in a ``finally``.

Only steps 1, 4, 5 and 6 wait, and only there do the sync and async adapters differ.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ._call import Call
from ._config_watch import ConfigWatcher
from ._errors import MeshError, RouteNotFound, TargetNotResolved
from ._snapshot import ListenerView, Snapshot
from .cluster._endpoints import EndpointState
from .resilience.fault import FaultDecision
from .resilience.mirror import MirrorTarget
from .resilience.retry import AttemptLoop
from .routing import RoutePlan

__all__ = ["STACK", "Engine"]

STACK = (
    ("logical", "resolve target -> listener -> route table; route, rewrites, header mutations"),
    ("fault", "HTTP fault filter: delay, abort (percentage, header-controlled, max active)"),
    ("mirror", "shadow copies to mirror clusters, fire and forget"),
    ("retry", "attempt loop: route timeout, per-try timeout, retry_on, jittered back-off"),
    ("concrete", "cluster -> admission (circuit breaker) -> load-balancer pick"),
    ("endpoint", "one attempt on a pooled connection to the endpoint"),
)


class Engine:
    """Reads the current Snapshot (one reference read, no lock) and makes decisions."""

    def __init__(
        self,
        watcher_factory: Callable[[Callable[[Snapshot], None]], ConfigWatcher],
        listener_name: Callable[[str], str],
    ) -> None:
        self.snapshot = Snapshot()
        self._listener_name = listener_name
        self._watcher = watcher_factory(self._publish)

    def _publish(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    # logical layer ---------------------------------------------------------------------
    def listener(self, authority: str) -> ListenerView | threading.Event:
        """The resolved listener for ``authority``, or an event to wait on for it."""
        name = self._listener_name(authority)
        view = self.snapshot.listeners.get(name)
        if view is not None:
            return view
        event = self._watcher.request(name)
        if event.is_set():  # settled between the two reads
            view = self.snapshot.listeners.get(name)
            if view is not None:
                return view
        return event

    def resolved(self, authority: str) -> ListenerView:
        """After the wait: the view, or TargetNotResolved."""
        view = self.snapshot.listeners.get(self._listener_name(authority))
        if view is None:
            raise TargetNotResolved(
                f"{authority}: the control plane did not resolve listener "
                f"{self._listener_name(authority)!r} in time",
                target=authority,
                reason="resolve_timeout",
            )
        return view

    def route(self, view: ListenerView, call: Call) -> RoutePlan:
        """Walk the route table: the plan for ``call`` or RouteNotFound."""
        if view.routes is None:
            raise TargetNotResolved(
                f"{call.authority}: {view.error}", target=call.authority, reason="listener_error"
            )
        plan = view.routes.route(call)
        if plan is None:
            raise RouteNotFound(
                f"{call.authority}: no route for {call.method} {call.path}",
                target=call.authority,
                reason="no_route",
            )
        return plan

    def fault(self, plan: RoutePlan, call: Call) -> FaultDecision | None:
        """The fault filter's decision for this call (delay and/or local abort)."""
        return plan.fault.decide(call, plan.cluster) if plan.fault is not None else None

    def attempts(
        self,
        plan: RoutePlan,
        call: Call,
        *,
        replayable: bool = True,
        deadline: float | None = None,
    ) -> AttemptLoop:
        """The attempt loop of one call, over the clusters of the current Snapshot.
        ``deadline`` (``time.monotonic()`` seconds) caps the route timeout: the caller's
        own deadline, when it has one."""
        return AttemptLoop(plan, call, self.snapshot.clusters, replayable, deadline=deadline)

    def mirror_endpoint(self, target: MirrorTarget, call: Call) -> EndpointState | None:
        """An endpoint of the mirror cluster, or None (mirrors never fail the call)."""
        cluster = self.snapshot.clusters.get(target.cluster)
        if cluster is None:
            return None
        try:
            return cluster.pick(call)
        except MeshError:
            return None

    def describe(self) -> str:
        """The client stack, outermost first."""
        return "\n".join(f"{i}. {name}: {what}" for i, (name, what) in enumerate(STACK, 1))

    def close(self) -> None:
        self._watcher.close()
