"""Per-endpoint subchannels: one grpcio channel per (endpoint address, authority).

Channels outlive Snapshots: an endpoint present in the next Snapshot keeps its
connection. When an endpoint leaves every cluster its channel is retired, and closed
once it has been retired for ``grace`` seconds (calls still running on it may finish).
The pool is the same for sync and asyncio channels; only the factory and closer differ.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .._engine import Engine

__all__ = ["Subchannel", "SubchannelPool"]

C = TypeVar("C")


class Subchannel(Generic[C]):
    """One grpcio channel to one endpoint, and the multicallables made on it."""

    __slots__ = ("address", "authority", "callables", "channel", "pinned")

    def __init__(self, address: str, authority: str, channel: C, pinned: bool = False) -> None:
        self.address = address
        self.authority = authority
        self.channel = channel
        self.pinned = pinned  # a passthrough channel to a host outside the mesh: never pruned
        # (kind, method, serializer, deserializer) -> the channel's multicallable
        self.callables: dict[tuple[Any, ...], Any] = {}

    def callable(self, key: tuple[Any, ...]) -> Any:
        """The channel's multicallable for ``key`` = (kind, method, ser, deser, registered)."""
        found = self.callables.get(key)
        if found is None:
            kind, method, ser, deser, registered = key
            make = getattr(self.channel, kind)
            found = make(method, ser, deser, _registered_method=registered)
            self.callables[key] = found
        return found


class SubchannelPool(Generic[C]):
    """Subchannels keyed by (address, authority[, TLS bridge target]), pruned as
    Snapshots drop endpoints."""

    def __init__(
        self,
        engine: Engine,
        factory: Callable[[str, str], C],
        closer: Callable[[C], None],
        *,
        grace: float = 30.0,
    ) -> None:
        self._engine = engine
        self._factory = factory
        self._closer = closer
        self._grace = grace
        self._lock = threading.Lock()
        self._live: dict[tuple[str, ...], Subchannel[C]] = {}
        self._retired: list[tuple[float, Subchannel[C]]] = []
        self._version = -1
        self._closed = False

    def get(
        self, address: str, authority: str, *, pinned: bool = False, via: str | None = None
    ) -> Subchannel[C]:
        """The subchannel for ``address`` (created on first use); ``pinned`` ones are
        never pruned (passthrough to hosts the mesh does not know); ``via`` is the
        target dialled instead of ``address`` (the TLS bridge's listener)."""
        version = self._engine.snapshot.version
        if version != self._version:
            self._prune(version)
        # plaintext keeps the (address, authority) key; a TLS bridge adds its listener
        key = (address, authority) if via is None else (address, authority, via)
        sub = self._live.get(key)
        if sub is not None:
            return sub
        with self._lock:
            if self._closed:
                raise RuntimeError("the channel is closed")
            sub = self._live.get(key)
            if sub is None:
                channel = self._factory(via or address, authority)
                sub = Subchannel(address, authority, channel, pinned)
                self._live[key] = sub
            return sub

    def _prune(self, version: int) -> None:
        snapshot = self._engine.snapshot
        known = {e.address for c in snapshot.clusters.values() for e in c.endpoints}
        now = time.monotonic()
        with self._lock:
            if self._version == version:
                return
            self._version = version
            gone = [k for k, s in self._live.items() if not s.pinned and s.address not in known]
            for key in gone:
                self._retired.append((now, self._live.pop(key)))
            due = [s for t, s in self._retired if now - t >= self._grace]
            self._retired = [(t, s) for t, s in self._retired if now - t < self._grace]
        for sub in due:
            self._closer(sub.channel)

    def __len__(self) -> int:
        return len(self._live)

    def addresses(self) -> set[str]:
        """Addresses with a live subchannel (for tests and introspection)."""
        return {s.address for s in self._live.values()}

    def close(self) -> list[C]:
        """Forget every subchannel; returns their channels for the caller to close."""
        with self._lock:
            self._closed = True
            subs = list(self._live.values()) + [s for _, s in self._retired]
            self._live, self._retired = {}, []
        return [s.channel for s in subs]
