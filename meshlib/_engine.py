"""The engine: sans-I/O routing and endpoint choice that every client adapter drives.

The client is a stack of layers, outermost first; each adds one concern:

- logical: resolve the target, walk the route table (route, timeout)
- concrete: the cluster, its LB picker
- endpoint: one attempt on a pooled connection (done by the adapter)

Adapters differ only in how they wait for a target's first resolution.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from ._call import Call
from ._config_watch import ConfigWatcher
from ._endpoints import EndpointState
from ._errors import NoHealthyUpstream, RouteNotFound, TargetNotResolved
from ._routing import RoutePlan
from ._snapshot import ListenerView, Snapshot

__all__ = ["STACK", "Engine", "Pick"]

STACK = (
    ("logical", "resolve target -> listener -> route table; route, timeout"),
    ("concrete", "cluster -> load-balancer pick"),
    ("endpoint", "one attempt on a pooled connection to the endpoint"),
)


@dataclass(frozen=True, slots=True)
class Pick:
    """Where one attempt goes."""

    plan: RoutePlan
    endpoint: EndpointState


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

    # concrete layer --------------------------------------------------------------------
    def pick(self, plan: RoutePlan, call: Call) -> Pick:
        cluster = self.snapshot.clusters.get(plan.cluster)
        if cluster is None:
            raise NoHealthyUpstream(
                f"{plan.cluster}: no healthy upstream (unknown cluster)",
                target=call.authority,
                cluster=plan.cluster,
                reason="no_healthy_upstream",
            )
        return Pick(plan, cluster.pick(call))

    def describe(self) -> str:
        """The client stack, outermost first."""
        return "\n".join(f"{i}. {name}: {what}" for i, (name, what) in enumerate(STACK, 1))

    def close(self) -> None:
        self._watcher.close()
