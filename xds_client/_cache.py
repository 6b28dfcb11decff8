"""What a connection knows of its subscribed resources, and the one place that decides
what an update means for them (shared by the state-of-the-world and delta protocols).

Every method runs with the owning connection's lock held and returns the watcher
notifications to run after the lock is released.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import any_pb2

from ._names import canonical_name
from ._timers import TimerHandle
from ._watchers import ResourceDoesNotExist, ResourceWatcher
from .resources import ResourceError, ResourceType

__all__ = [
    "ACKED",
    "DOES_NOT_EXIST",
    "NACKED",
    "REQUESTED",
    "WILDCARD",
    "Decoded",
    "Entry",
    "Notify",
    "TypeState",
    "decode_all",
]

log = logging.getLogger("xds_client")
Notify = Callable[[], None]
WILDCARD = "*"
REQUESTED, DOES_NOT_EXIST, ACKED, NACKED = "REQUESTED", "DOES_NOT_EXIST", "ACKED", "NACKED"


@dataclass(eq=False, slots=True)
class Entry:
    """One resource name: its watchers (none if only a wildcard brought it) and state."""

    watchers: list[ResourceWatcher[Any]] = field(default_factory=list)
    resource: Any = None
    raw: any_pb2.Any | None = None
    version: str = ""
    updated: float = 0.0
    status: str = REQUESTED
    error: str = ""
    error_version: str = ""
    error_time: float = 0.0
    timer: TimerHandle | None = None

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


@dataclass(frozen=True, slots=True)
class Decoded:
    name: str
    model: Any
    raw: any_pb2.Any
    version: str


@dataclass(eq=False)
class TypeState:
    """Every subscription of one resource type on one connection."""

    rtype: ResourceType[Any]
    entries: dict[str, Entry] = field(default_factory=dict)
    version: str = ""  # SotW: the last accepted version_info, re-sent on a new stream
    by_hash: dict[int, str] = field(default_factory=dict)  # hash(raw bytes) -> name

    def reuse(self, raw: any_pb2.Any) -> tuple[str, Any] | None:
        """The cached (name, model) if ``raw`` is byte-for-byte the cached resource: a
        state-of-the-world response re-sends unchanged resources, which are not decoded
        again."""
        value = raw.value
        name = self.by_hash.get(hash(value))
        entry = self.entries.get(name) if name is not None else None
        if entry is None or entry.raw is None or entry.raw.value != value:
            return None
        return (name, entry.resource) if name is not None else None

    @property
    def wildcard(self) -> bool:
        return WILDCARD in self.entries

    def subscribed(self) -> list[str]:
        """Names this client asks for (``*`` included), sorted."""
        return sorted(n for n, e in self.entries.items() if e.watchers)

    def watchers_of(self, name: str) -> list[ResourceWatcher[Any]]:
        entry = self.entries.get(name)
        found = list(entry.watchers) if entry is not None else []
        wildcard = self.entries.get(WILDCARD)
        if wildcard is not None and name != WILDCARD:
            found += wildcard.watchers
        return found

    # -- updates ------------------------------------------------------------------------
    def accept(self, d: Decoded) -> list[Notify]:
        """A valid resource arrived."""
        entry = self.entries.get(d.name)
        if entry is None:
            if not self.wildcard:
                return []  # not subscribed: ignored, as Envoy and gRPC do
            entry = self.entries[d.name] = Entry()
        entry.cancel_timer()
        changed = entry.resource is None or (
            d.model is not entry.resource and entry.resource != d.model
        )
        if entry.raw is not None:
            self.by_hash.pop(hash(entry.raw.value), None)
        self.by_hash[hash(d.raw.value)] = d.name
        entry.resource, entry.raw, entry.version = d.model, d.raw, d.version
        entry.updated = time.time()
        entry.status, entry.error, entry.error_version = ACKED, "", ""
        if not changed:
            return []
        model, name = d.model, d.name
        return [_bind(w.on_resource_changed, name, model) for w in self.watchers_of(name)]

    def reject(self, name: str, error: ResourceError, version: str) -> list[Notify]:
        """``name`` failed validation: NACKED; the last good resource stays in use."""
        entry = self.entries.get(name)
        if entry is None:
            if not self.wildcard:
                return []
            entry = self.entries[name] = Entry()
        entry.cancel_timer()
        entry.status, entry.error = NACKED, str(error)
        entry.error_version, entry.error_time = version, time.time()
        if entry.resource is not None:
            return [_bind(w.on_ambient_error, name, error) for w in self.watchers_of(name)]
        return [_bind(w.on_resource_error, name, error) for w in self.watchers_of(name)]

    def remove(self, name: str, *, ignore_deletion: bool) -> list[Notify]:
        """The server says ``name`` is gone (absent from a SotW LDS/CDS response, in a
        delta ``removed_resources``), or its does-not-exist timer fired."""
        entry = self.entries.get(name)
        if entry is None or name == WILDCARD:
            return []
        if ignore_deletion and entry.resource is not None:
            # gRFC A53: keep using it; watchers hear of it, the resource stays.
            err = ResourceDoesNotExist(
                f"{self.rtype.type_name} {name!r} was deleted by the server; "
                "still in use (ignore_resource_deletion)"
            )
            return [_bind(w.on_ambient_error, name, err) for w in self.watchers_of(name)]
        entry.cancel_timer()
        if entry.raw is not None:
            self.by_hash.pop(hash(entry.raw.value), None)
        watchers = self.watchers_of(name)
        already = entry.status == DOES_NOT_EXIST
        if not entry.watchers:
            del self.entries[name]  # only a wildcard brought it
        entry.resource, entry.raw, entry.version = None, None, ""
        entry.status, entry.error = DOES_NOT_EXIST, ""
        if already:
            return []
        err = self.does_not_exist(name)
        return [_bind(w.on_resource_error, name, err) for w in watchers]

    def does_not_exist(self, name: str) -> ResourceDoesNotExist:
        return ResourceDoesNotExist(f"{self.rtype.type_name} {name!r} does not exist")

    def initial_notices(self, name: str, watcher: ResourceWatcher[Any]) -> list[Notify]:
        """What a new watcher of ``name`` is told at once from the cache."""
        if name == WILDCARD:
            return [
                _bind(watcher.on_resource_changed, n, e.resource)
                for n, e in self.entries.items()
                if e.resource is not None
            ]
        entry = self.entries[name]
        nacked = ResourceError(self.rtype.type_name, name, "", f"rejected: {entry.error}")
        if entry.resource is not None:
            out = [_bind(watcher.on_resource_changed, name, entry.resource)]
            if entry.status == NACKED:
                out.append(_bind(watcher.on_ambient_error, name, nacked))
            return out
        if entry.status == DOES_NOT_EXIST:
            return [_bind(watcher.on_resource_error, name, self.does_not_exist(name))]
        if entry.status == NACKED:
            return [_bind(watcher.on_resource_error, name, nacked)]
        return []

    def connection_error(self, error: Exception) -> list[Notify]:
        """The stream failed: cached resources keep serving (ambient error); watchers
        still waiting for their first resource get a resource error."""
        out: list[Notify] = []
        for name, entry in self.entries.items():
            entry.cancel_timer()
            if name == WILDCARD or entry.status == DOES_NOT_EXIST:
                continue
            cb = "on_ambient_error" if entry.resource is not None else "on_resource_error"
            out += [_bind(getattr(w, cb), name, error) for w in entry.watchers]
        return out


def decode_all(
    rtype: ResourceType[Any],
    items: Iterable[tuple[any_pb2.Any, str, str]],
    reuse: Callable[[any_pb2.Any], tuple[str, Any] | None] = lambda raw: None,
) -> tuple[list[Decoded], dict[str, ResourceError], list[str]]:
    """Decode ``(Any, version, name the server gave or "")`` items.

    Returns the valid resources, the invalid ones by name, and every error message
    (including those of resources whose name could not be read) for the NACK. A name
    seen twice makes both copies invalid.
    """
    decoded: dict[str, Decoded] = {}
    failed: dict[str, ResourceError] = {}
    errors: list[str] = []
    for index, (raw, version, given) in enumerate(items):
        given = canonical_name(given)
        try:
            cached = reuse(raw) if raw.type_url == rtype.type_url else None
            name, model = cached if cached is not None else rtype.decode(raw)
            name = canonical_name(name)
            if given and name != given:
                raise ResourceError(rtype.type_name, given, "name", f"resource holds {name!r}")
        except Exception as exc:
            if not isinstance(exc, ResourceError):  # a decoder bug: NACK, never crash
                log.error("%s decoder raised", rtype.type_name, exc_info=exc)
                exc = ResourceError(
                    rtype.type_name, given, "", f"cannot validate: {type(exc).__name__}: {exc}"
                )
            if not exc.name and given:
                exc = ResourceError(rtype.type_name, given, exc.field, exc.problem)
            errors.append(str(exc) if exc.name else f"resources[{index}]: {exc}")
            if exc.name:
                failed[canonical_name(exc.name)] = exc
                decoded.pop(canonical_name(exc.name), None)
            continue
        if name in decoded or name in failed:
            err = ResourceError(
                rtype.type_name, name, "", "duplicate resource name in one response"
            )
            errors.append(str(err))
            decoded.pop(name, None)
            failed[name] = err
            continue
        decoded[name] = Decoded(name, model, raw, version)
    return list(decoded.values()), failed, errors


def _bind(fn: Callable[[str, Any], None], name: str, arg: Any) -> Notify:
    return lambda: fn(name, arg)
