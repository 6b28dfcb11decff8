"""A live source: Kubernetes and Istio objects from an API server, by list and watch.

:class:`KubernetesSource` runs one reflector thread per kind (and per namespace when
``namespaces`` is given). Each lists its kind with the ``kubernetes`` client, then watches
from the list's ``resourceVersion``; a watch that ends is resumed from the last version
seen, a ``410 Gone`` starts over with a fresh list, and errors are retried with backoff.
Objects are kept as the API's own JSON, the shape the file source reads, so both sources
share one parser. :meth:`KubernetesSource.load_lenient` leaves a bad object out and
reports it (kind, ``namespace/name``, field); the control plane keeps serving the rest,
and the object's last good version if it had one.

Live changes: ``source.watch(callback)`` calls ``callback()`` (from one thread, never two
at once, coalescing bursts) after objects change; :class:`ControlPlane` subscribes its
reload this way when started and calls ``source.close()`` when stopped. See
:class:`LiveSource`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..objects._fields import ConfigError
from ..objects._kubernetes import MeshObjects
from ._files import _PARSERS, LoadResult, Source, assemble
from ._watch import (
    RESOURCE_KINDS,
    Backoff,
    KubernetesError,
    Reflector,
    ResourceKind,
    make_api_client,
)

__all__ = [
    "RESOURCE_KINDS",
    "Backoff",
    "KubernetesError",
    "KubernetesSource",
    "LiveSource",
    "ResourceKind",
]

log = logging.getLogger(__name__)

_Key = tuple[str, str, str]  # kind, namespace, name
_DEFAULT_KINDS = tuple(k for k in RESOURCE_KINDS if k.kind != "Endpoints")


@runtime_checkable
class LiveSource(Source, Protocol):
    """A :class:`Source` that also reports changes as they happen."""

    def watch(self, on_change: Callable[[], None]) -> None:
        """Call ``on_change()`` after the objects change, until :meth:`close`."""
        ...

    def close(self) -> None:
        """Stop watching and release connections."""
        ...


class KubernetesSource:
    """Kubernetes and Istio objects from a live API server (see the module docs).

    Give an ``api_client`` (a ``kubernetes.client.ApiClient``), a ``host`` URL, or a
    ``kubeconfig`` path (with ``context``); with none, the in-cluster service account or
    ``~/.kube/config`` is used. ``namespaces`` limits the source to those namespaces (all
    by default). ``kinds`` defaults to :data:`RESOURCE_KINDS` without ``Endpoints``: a
    cluster mirrors every EndpointSlice into Endpoints, and istiod reads the slices too;
    pass ``kinds=RESOURCE_KINDS`` for clusters that only have Endpoints.
    ``watch_timeout`` is the server-side length of one watch request.
    """

    def __init__(
        self,
        api_client: Any = None,
        *,
        host: str | None = None,
        kubeconfig: str | None = None,
        context: str | None = None,
        namespaces: Sequence[str] | None = None,
        kinds: Sequence[ResourceKind] | None = None,
        watch_timeout: int = 300,
        backoff: Backoff | None = None,
        sync_timeout: float = 30.0,
    ) -> None:
        self.namespaces = tuple(namespaces) if namespaces else None
        self.kinds = tuple(kinds) if kinds is not None else _DEFAULT_KINDS
        pool = len(self.kinds) * len(self.namespaces or (None,)) + 4
        self.api_client = make_api_client(api_client, kubeconfig, host, context, pool)
        self.watch_timeout = watch_timeout
        self.backoff = backoff or Backoff()
        self.sync_timeout = sync_timeout
        #: One line per object left out, ``Kind namespace/name: field: problem``.
        self.problems: tuple[str, ...] = ()
        self._lock = threading.Lock()
        self._docs: dict[_Key, dict[str, Any]] = {}
        self._generation = 0
        self._changed = threading.Condition(self._lock)
        self._stopped = threading.Event()
        self._callbacks: list[Callable[[], None]] = []
        self._reflectors: list[Reflector] = []
        self._notifier: threading.Thread | None = None
        self._cache: tuple[int, LoadResult] | None = None
        self._load_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._parsed: dict[_Key, _Parsed] = {}

    def __repr__(self) -> str:
        scope = ",".join(self.namespaces) if self.namespaces else "all namespaces"
        return f"KubernetesSource({self.api_client.configuration.host!r}, {scope})"

    # Source ------------------------------------------------------------------------------

    def load(self) -> MeshObjects:
        """Every object now; raises :class:`ConfigError` listing the invalid ones.

        Starts watching on the first call. A control plane uses :meth:`load_lenient`.
        """
        result = self.load_lenient()
        if result.problems:
            raise ConfigError("\n".join(result.problems), result.problems)
        return assemble(result.objects)

    def load_lenient(self) -> LoadResult:
        """The valid objects, and one problem per invalid one (see :class:`LoadResult`).

        Each problem names the kind, ``namespace/name`` and field. Objects are parsed
        again only when their resourceVersion changes.
        """
        self.start()
        with self._load_lock:
            with self._lock:
                generation = self._generation
                if self._cache is not None and self._cache[0] == generation:
                    return self._cache[1]
                docs = dict(self._docs)
            result = self._parse(docs)
            for line in sorted(set(result.problems) - set(self.problems)):
                log.warning("kubernetes: rejected %s", line)
            self.problems = result.problems
            self._cache = (generation, result)
            return result

    def _parse(self, docs: Mapping[_Key, Mapping[str, Any]]) -> LoadResult:
        models: dict[str, Any] = {}
        problems: list[str] = []
        rejected: set[str] = set()
        for key in sorted(docs):
            doc = docs[key]
            version = _version(doc)
            cached = self._parsed.get(key)
            if cached is None or cached.version != version:
                cached = _parse_one(doc, version)
                self._parsed[key] = cached
            name = f"{key[0]} {key[1]}/{key[2]}"  # as FileSource keys its objects
            if cached.problem is not None:
                problems.append(cached.problem)
                rejected.add(name)
            elif cached.model is not None:
                models[name] = cached.model
        for key in set(self._parsed) - set(docs):
            del self._parsed[key]
        return LoadResult(models, tuple(problems), frozenset(rejected))

    # LiveSource --------------------------------------------------------------------------

    def watch(self, on_change: Callable[[], None]) -> None:
        """Call ``on_change()`` after each batch of changes (see :class:`LiveSource`)."""
        with self._lock:
            self._callbacks.append(on_change)
        self.start()

    def start(self) -> KubernetesSource:
        """List every kind, then watch on background threads; returns ``self``.

        Raises :class:`KubernetesError` if a first list fails for another reason than the
        kind not being served (404, e.g. Istio's CRDs not installed: that kind is empty).
        """
        with self._start_lock:  # a second caller waits for the first sync
            if self._reflectors:
                return self
            self._sync()
        return self

    def _sync(self) -> None:
        scopes: Sequence[str | None] = self.namespaces or (None,)
        with self._lock:
            self._reflectors = [
                Reflector(
                    self.api_client,
                    kind,
                    ns,
                    _Store(self),
                    self._stopped,
                    self.backoff,
                    self.watch_timeout,
                )
                for kind in self.kinds
                for ns in scopes
            ]
        for reflector in self._reflectors:
            reflector.thread.start()
        for reflector in self._reflectors:
            synced = reflector.synced.wait(self.sync_timeout)
            error = reflector.error if synced else f"no list within {self.sync_timeout}s"
            if error is not None:
                self.close()  # then allow another start()
                self._reflectors, self._stopped = [], threading.Event()
                raise KubernetesError(f"{reflector.describe()}: {error}")
        self._notifier = threading.Thread(target=self._notify, name="kube-notify", daemon=True)
        self._notifier.start()

    def close(self) -> None:
        """Stop every watch; :meth:`load` keeps returning the last objects seen."""
        self._stopped.set()
        with self._lock:
            self._changed.notify_all()
            reflectors = list(self._reflectors)
        for reflector in reflectors:
            reflector.cancel()
        for reflector in reflectors:
            reflector.thread.join(5)
        if self._notifier is not None:
            self._notifier.join(5)

    def resource_versions(self) -> dict[str, str | None]:
        """Each watched path's resume point (its last resourceVersion seen), for diagnostics."""
        return {r.describe(): r.version for r in self._reflectors}

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called (a closed source does not restart)."""
        return self._stopped.is_set()

    def __enter__(self) -> KubernetesSource:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # state kept by the reflectors ---------------------------------------------------------

    def _replace_kind(
        self, kind: ResourceKind, namespace: str | None, items: list[dict[str, Any]]
    ) -> None:
        fresh = {_key(doc): doc for doc in items}
        with self._lock:
            stale = [
                k
                for k in self._docs
                if k[0] == kind.kind and namespace in (None, k[1]) and k not in fresh
            ]
            changed = bool(stale) or any(
                _version(self._docs.get(k)) != _version(doc) for k, doc in fresh.items()
            )
            for k in stale:
                del self._docs[k]
            self._docs.update(fresh)
            if changed:
                self._bump()

    def _apply_event(self, event_type: str, doc: dict[str, Any]) -> None:
        key = _key(doc)
        with self._lock:
            if event_type == "DELETED":
                if self._docs.pop(key, None) is None:
                    return
            elif _version(self._docs.get(key)) == _version(doc):
                return
            else:
                self._docs[key] = doc
            self._bump()

    def _bump(self) -> None:
        self._generation += 1
        self._changed.notify_all()

    def _notify(self) -> None:
        seen = self._generation
        while True:
            with self._lock:
                while self._generation == seen and not self._stopped.is_set():
                    self._changed.wait()
                if self._stopped.is_set():
                    return
                seen = self._generation
                callbacks = list(self._callbacks)
            for callback in callbacks:
                try:
                    callback()
                except Exception:
                    log.exception("kubernetes: change callback %r failed", callback)


class _Store:
    """The reflectors' view of a source (its :class:`Store` methods stay private)."""

    def __init__(self, source: KubernetesSource) -> None:
        self.replace = source._replace_kind
        self.apply = source._apply_event


@dataclass(frozen=True)
class _Parsed:
    version: str | None
    model: Any
    problem: str | None


def _parse_one(doc: Mapping[str, Any], version: str | None) -> _Parsed:
    """Validate one object with the parser the file source uses for its kind."""
    parser = _PARSERS.get(str(doc.get("kind")))
    if parser is None:
        return _Parsed(version, None, None)
    try:
        return _Parsed(version, parser(doc), None)
    except ConfigError as err:
        return _Parsed(version, None, str(err))


def _key(doc: Mapping[str, Any]) -> _Key:
    meta = doc.get("metadata") or {}
    return (str(doc.get("kind")), str(meta.get("namespace", "")), str(meta.get("name", "")))


def _version(doc: Mapping[str, Any] | None) -> str | None:
    if doc is None:
        return None
    return str((doc.get("metadata") or {}).get("resourceVersion"))
