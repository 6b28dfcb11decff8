"""One ADS connection: a stream to the first reachable server of a list (gRFC A71
fallback), driven on its own thread, with the subscriptions of one authority.

The protocol objects (:mod:`._sotw`, :mod:`._delta`) decide what to send and what a
response means; this module only runs the stream, the backoff and the timers.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from envoy.config.core.v3 import base_pb2

from ._bootstrap import ServerConfig
from ._cache import REQUESTED, WILDCARD, Entry, Notify, TypeState
from ._delta import DeltaProtocol
from ._sotw import SotwProtocol
from ._timers import TimerQueue
from ._transport import AdsStream, AdsTransport, StreamClosed
from ._watchers import ResourceWatcher
from .resources import ResourceType

__all__ = ["Backoff", "Connection", "XdsConnectionError"]

log = logging.getLogger("xds_client")
_Protocol = SotwProtocol | DeltaProtocol


class XdsConnectionError(ConnectionError):
    """The ADS stream failed; cached resources keep serving."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter between failed connection rounds (gRPC defaults)."""

    base: float = 1.0
    maximum: float = 120.0
    multiplier: float = 1.6
    jitter: float = 0.2

    def delay(self, attempt: int) -> float:
        d = min(self.maximum, self.base * self.multiplier**attempt)
        return d * (1 + random.uniform(-self.jitter, self.jitter))


@dataclass(frozen=True, slots=True)
class Settings:
    node: base_pb2.Node
    dne_timeout: float
    backoff: Backoff
    fallback_recheck: float
    protocol_for: Callable[[ServerConfig], str]


class Connection:
    """Subscriptions for one authority, served by one stream at a time."""

    def __init__(
        self,
        servers: tuple[ServerConfig, ...],
        transport: AdsTransport,
        types: tuple[ResourceType[Any], ...],
        settings: Settings,
        timers: TimerQueue,
    ) -> None:
        self.servers = servers
        self.states = {t.type_url: TypeState(t) for t in types}
        self.lock = threading.RLock()
        self.server: ServerConfig | None = None  # the server the live stream talks to
        self._transport = transport
        self._settings = settings
        self._timers = timers
        self._stream: AdsStream | None = None
        self._proto: _Protocol | None = None
        self._stopped = threading.Event()
        self._recheck = False
        self._thread: threading.Thread | None = None
        self._hold = 0  # > 0: subscription changes wait for release() (coalesced)
        self._dirty: set[str] = set()
        self._start_pending = False
        #: Responses applied (ACKed, True) or rejected (NACKed, False), per type URL.
        self.updates: dict[tuple[str, bool], int] = {}

    # -- subscriptions (any thread) ----------------------------------------------------
    def watch(self, rtype: ResourceType[Any], name: str, watcher: ResourceWatcher[Any]) -> None:
        with self.lock:
            state = self.states.get(rtype.type_url)
            if state is None:
                raise ValueError(
                    f"resource type {rtype.type_url} is not registered with this client"
                )
            entry = state.entries.get(name)
            first = entry is None or not entry.watchers
            if entry is None:
                entry = state.entries[name] = Entry()
            entry.watchers.append(watcher)
            notify = state.initial_notices(name, watcher)
            if first:
                self._subscriptions_changed(state)
                self._arm(state, name)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="xds-client", daemon=True)
                self._thread.start()
        self._deliver(notify)

    def cancel(self, rtype: ResourceType[Any], name: str, watcher: ResourceWatcher[Any]) -> None:
        with self.lock:
            state = self.states[rtype.type_url]
            entry = state.entries.get(name)
            if entry is None or watcher not in entry.watchers:
                return
            entry.watchers.remove(watcher)
            if entry.watchers:
                return
            if name == WILDCARD:
                del state.entries[name]
                for n in [n for n, e in state.entries.items() if not e.watchers]:
                    state.entries.pop(n).cancel_timer()
            elif not state.wildcard:
                state.entries.pop(name).cancel_timer()
            self._subscriptions_changed(state)

    def hold(self) -> None:
        """Defer subscription requests until the matching :meth:`release`."""
        with self.lock:
            self._hold += 1

    def release(self) -> None:
        with self.lock:
            self._hold -= 1
            if self._hold:
                return
            dirty, self._dirty = self._dirty, set()
            if self._start_pending and self._stream is not None and self._proto is not None:
                self._start_pending = False
                for request in self._proto.start(self.states):
                    self._stream.send(request)
                return
            for type_url in sorted(dirty):
                self._subscriptions_changed(self.states[type_url])

    def close(self) -> None:
        self._stopped.set()
        with self.lock:
            stream = self._stream
            for state in self.states.values():
                for entry in state.entries.values():
                    entry.cancel_timer()
        if stream is not None:
            stream.close()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    # -- the stream (own thread) --------------------------------------------------------
    def _run(self) -> None:
        attempt, index = 0, 0
        while not self._stopped.is_set():
            server = self.servers[index]
            try:
                got_response = self._serve(server, index)
            except Exception:  # a bug must not end the client: log, back off, go on
                log.exception("xDS stream to %s failed", server.server_uri)
                got_response = False
            if self._stopped.is_set():
                return
            if got_response:
                attempt, index = 0, 0  # reconnect at once, primary first
                continue
            if index + 1 < len(self.servers):
                index += 1  # gRFC A71: the next server, without waiting
                continue
            index = 0
            self._stopped.wait(self._settings.backoff.delay(attempt))
            attempt += 1

    def _serve(self, server: ServerConfig, index: int) -> bool:
        delta = self._settings.protocol_for(server) == "delta"
        try:
            stream = (
                self._transport.connect_delta(server) if delta else self._transport.connect(server)
            )
        except Exception as exc:  # a transport may fail to build its channel
            log.warning("xDS server %s: cannot connect: %s", server.server_uri, exc)
            return False
        proto: _Protocol = (DeltaProtocol if delta else SotwProtocol)(self._settings.node)
        with self.lock:
            if self._stopped.is_set():
                stream.close()
                return False
            self._stream, self._proto, self.server, self._recheck = stream, proto, server, False
            if self._hold:
                self._start_pending = True  # sent by release(), with every subscription
            else:
                for request in proto.start(self.states):
                    stream.send(request)
            for state in self.states.values():
                for name in list(state.entries):
                    self._arm(state, name)
        recheck = None
        if index > 0:
            recheck = self._timers.call_later(
                self._settings.fallback_recheck, self._recheck_primary
            )
        got_response = False
        reason: Exception
        try:
            for response in stream.responses():
                got_response = True
                self._handle(response)
            reason = XdsConnectionError(f"{server.server_uri}: server closed the stream")
        except StreamClosed as exc:
            reason = XdsConnectionError(f"{server.server_uri}: {exc}")
        finally:
            if recheck is not None:
                recheck.cancel()
            with self.lock:
                self._stream = self._proto = self.server = None
                self._start_pending = False
                notify: list[Notify] = []
                # Quiet while falling back (gRFC A71): watchers hear of a failure when the
                # stream had worked, or when the last server of the list failed too.
                last = index + 1 == len(self.servers)
                quiet = self._recheck or not (got_response or last)
                if not self._stopped.is_set() and not quiet:
                    for state in self.states.values():
                        notify += state.connection_error(reason)
                else:
                    for state in self.states.values():
                        for entry in state.entries.values():
                            entry.cancel_timer()
            stream.close()
        if not self._stopped.is_set() and not quiet:
            log.warning("xDS stream ended: %s", reason)
            run_all(notify)
        elif not self._stopped.is_set():
            log.info("xDS stream ended: %s", reason)
        return got_response

    def _recheck_primary(self) -> None:
        with self.lock:
            stream, self._recheck = self._stream, True
        if stream is not None:
            log.info("xDS: on a fallback server; trying the primary again")
            stream.close()

    def _handle(self, response: Any) -> None:
        with self.lock:
            proto, stream = self._proto, self._stream
            if proto is None or stream is None:
                return
            server = self.server
            ignore = server is not None and server.ignore_resource_deletion
            notify, reply, errors = proto.on_response(self.states, response, ignore_deletion=ignore)
            key = (response.type_url, not errors)
            self.updates[key] = self.updates.get(key, 0) + 1
            if errors:
                log.warning("xDS NACK %s: %s", response.type_url, "; ".join(errors))
            if reply is not None:
                stream.send(reply)
        self._deliver(notify)

    def _deliver(self, notify: list[Notify]) -> None:
        """Run watcher callbacks (lock not held); the watches they make are coalesced
        into one request per type, sent when they return."""
        if not notify:
            return
        self.hold()
        try:
            run_all(notify)
        finally:
            self.release()

    # -- helpers (lock held) ---------------------------------------------------------------
    def _subscriptions_changed(self, state: TypeState) -> None:
        if self._hold:
            self._dirty.add(state.rtype.type_url)
            return
        if self._stream is None or self._proto is None:
            return
        request = self._proto.subscription_changed(state)
        if request is not None:
            self._stream.send(request)

    def _arm(self, state: TypeState, name: str) -> None:
        """Start the does-not-exist timer of ``name`` if it is waiting on a live stream."""
        entry = state.entries.get(name)
        if name == WILDCARD or entry is None or self._stream is None:
            return
        if entry.resource is not None or entry.status != REQUESTED or not entry.watchers:
            return
        entry.cancel_timer()
        entry.timer = self._timers.call_later(
            self._settings.dne_timeout, lambda: self._expire(state, name, entry)
        )

    def _expire(self, state: TypeState, name: str, entry: Entry) -> None:
        with self.lock:
            if state.entries.get(name) is not entry or entry.timer is None:
                return
            entry.timer = None
            if entry.resource is not None or entry.status != REQUESTED or self._stream is None:
                return
            notify = state.remove(name, ignore_deletion=False)
        self._deliver(notify)


def run_all(notify: list[Notify]) -> None:
    for fn in notify:
        try:
            fn()
        except Exception:  # a watcher's bug must not kill the xDS thread
            log.exception("xDS watcher raised")
