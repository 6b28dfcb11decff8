"""The engine: the current Snapshot and the resolution of targets to listeners.

The client is a stack of layers, outermost first; each adds one concern (``STACK``).
How a call goes through them is code, not prose: an adapter looks the target up here
(:meth:`Engine.lookup`: the Snapshot, read once per call, and the listener), then
drives the call's :class:`~meshlib.exchange.ExchangeCore` (route, fault, mirrors,
attempts, local replies; see :mod:`meshlib.exchange`), and only sends and waits.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ._config_watch import ConfigWatcher
from ._errors import MeshClosed, TargetNotResolved
from ._snapshot import ListenerView, Snapshot

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
        self.closed = False
        self._listener_name = listener_name
        self._watcher = watcher_factory(self._publish)

    def _publish(self, snapshot: Snapshot) -> None:
        if not self.closed:
            self.snapshot = snapshot

    # logical layer ---------------------------------------------------------------------
    def lookup(self, authority: str) -> tuple[Snapshot, ListenerView] | threading.Event:
        """The current Snapshot (the call's one read of it) and the resolved listener
        for ``authority``, or an event to wait on for it; MeshClosed after close()."""
        snapshot = self.snapshot
        name = self._listener_name(authority)
        view = snapshot.listeners.get(name)
        if view is not None:
            return snapshot, view
        if self.closed:
            raise MeshClosed(f"{authority}: the mesh is closed", target=authority, reason="closed")
        event = self._watcher.request(name)
        if event.is_set():  # settled between the two reads
            snapshot = self.snapshot
            view = snapshot.listeners.get(name)
            if view is not None:
                return snapshot, view
        return event

    def listener(self, authority: str) -> ListenerView | threading.Event:
        """The resolved listener for ``authority``, or an event to wait on for it."""
        found = self.lookup(authority)
        return found if isinstance(found, threading.Event) else found[1]

    def looked_up(self, authority: str) -> tuple[Snapshot, ListenerView]:
        """After the wait: the Snapshot and the view, or TargetNotResolved."""
        snapshot = self.snapshot
        return snapshot, self._resolved(snapshot, authority)

    def resolved(self, authority: str) -> ListenerView:
        """After the wait: the view, or TargetNotResolved."""
        return self._resolved(self.snapshot, authority)

    def _resolved(self, snapshot: Snapshot, authority: str) -> ListenerView:
        if self.closed:
            raise MeshClosed(f"{authority}: the mesh is closed", target=authority, reason="closed")
        view = snapshot.listeners.get(self._listener_name(authority))
        if view is None:
            raise TargetNotResolved(
                f"{authority}: the control plane did not resolve listener "
                f"{self._listener_name(authority)!r} in time",
                target=authority,
                reason="resolve_timeout",
            )
        return view

    def describe(self) -> str:
        """The client stack, outermost first."""
        return "\n".join(f"{i}. {name}: {what}" for i, (name, what) in enumerate(STACK, 1))

    def close(self) -> None:
        """Stop routing: every later call fails with MeshClosed (no stale Snapshot)."""
        self.closed = True
        self.snapshot = Snapshot()
        self._watcher.close()
