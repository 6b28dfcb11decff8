"""Sources of Kubernetes objects for the control plane.

A source is anything with a ``load()`` returning :class:`MeshObjects`; the embedded
default is :class:`FileSource`, which reads the same YAML one would ``kubectl apply``.
A Kubernetes API watcher is a later source behind the same seam.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from ..objects._fields import ConfigError, object_id
from ..objects._istio_authn import RequestAuthentication
from ..objects._istio_mesh import (
    AuthorizationPolicy,
    PeerAuthentication,
    ServiceEntry,
    Sidecar,
    WorkloadEntry,
)
from ..objects._istio_networking import VirtualService
from ..objects._istio_policy import DestinationRule
from ..objects._kubernetes import EndpointSlice, MeshObjects, Pod, Service
from ..objects._parse import object_key, parse_object
from ..objects._schema import unknown_top_level

__all__ = [
    "STATE_DIR",
    "FileSource",
    "LoadResult",
    "Source",
    "assemble",
    "documents",
    "tombstone_path",
]

log = logging.getLogger(__name__)

_SUFFIXES = (".yaml", ".yml", ".json")
#: The folder under a config directory where ``meshlib apply``/``delete`` keep their records.
STATE_DIR = ".meshlib"
# libyaml's parser when PyYAML was built with it (about 10x faster), else the Python one.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# MeshObjects field for each model type (Endpoints load as EndpointSlices).
_FIELDS: dict[type, str] = {
    Service: "services",
    EndpointSlice: "endpoint_slices",
    Pod: "pods",
    VirtualService: "virtual_services",
    DestinationRule: "destination_rules",
    ServiceEntry: "service_entries",
    WorkloadEntry: "workload_entries",
    PeerAuthentication: "peer_authentications",
    AuthorizationPolicy: "authorization_policies",
    RequestAuthentication: "request_authentications",
    Sidecar: "sidecars",
}


class Source(Protocol):
    """Where the control plane's objects come from."""

    def load(self) -> MeshObjects:
        """Read every object now; raise :class:`ConfigError` if any is invalid."""
        ...


@dataclass(frozen=True)
class LoadResult:
    """A lenient load: the valid objects by ``"<Kind> <ns>/<name>"``, and the rejects.

    ``problems`` holds one message per fault, naming the file, kind, ``namespace/name``
    and field; ``rejected`` the keys of the objects they concern (so a caller keeps
    serving their previous versions), including every object last read from a file that
    no longer parses. ``files`` are the files read, ``skipped`` counts the documents of
    kinds the mesh does not use, by kind; ``deleted`` the keys ``meshlib delete`` removed.
    """

    objects: Mapping[str, Any]
    problems: tuple[str, ...] = ()
    rejected: frozenset[str] = frozenset()
    files: tuple[str, ...] = ()
    skipped: Mapping[str, int] = field(default_factory=dict)
    deleted: frozenset[str] = frozenset()

    def summary(self) -> str:
        """``12 objects from 3 files: 4 Service, 4 EndpointSlice...; skipped 4 Deployment``."""
        kinds = Counter(key.split(" ", 1)[0] for key in self.objects)
        text = f"{len(self.objects)} objects"
        if self.files:
            text += f" from {len(self.files)} files"
        if kinds:
            text += ": " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        if self.skipped:
            text += "; skipped " + ", ".join(f"{n} {k}" for k, n in sorted(self.skipped.items()))
        if self.deleted:
            text += f"; {len(self.deleted)} deleted by meshlib delete"
        if self.problems:
            text += f"; {len(self.problems)} problems"
        return text


def assemble(objects: Mapping[str, Any]) -> MeshObjects:
    """Group models (as :class:`LoadResult` holds them) into :class:`MeshObjects`."""
    groups: dict[str, list[Any]] = {name: [] for name in _FIELDS.values()}
    for key in sorted(objects):
        obj = objects[key]
        groups[_FIELDS[type(obj)]].append(obj)
    return MeshObjects(**{name: tuple(items) for name, items in groups.items()})


def tombstone_path(root: Path, key: str) -> Path:
    """Where ``meshlib delete`` records that object ``key`` was deleted."""
    kind, _, ident = key.partition(" ")
    namespace, _, name = ident.partition("/")
    return root / STATE_DIR / "deleted" / f"{kind}.{namespace}.{name}"


@dataclass
class _Candidate:
    stamp: tuple[int, int]  # (mtime_ns, read order): the newest applied wins
    file: Path
    model: Any = None
    errors: tuple[str, ...] = ()


class FileSource:
    """Objects from a YAML/JSON file or a directory of them, read as ``kubectl apply -R -f``.

    Files ending in ``.yaml``, ``.yml`` or ``.json`` are read recursively (hidden files and
    folders skipped, except the records ``meshlib apply`` keeps under ``.meshlib/``). YAML
    files may hold several documents; ``kind: List`` documents are expanded. When two files
    define the same kind/namespace/name, the one applied last (the newest file) wins.
    Kinds the mesh does not use are skipped and counted. Call :meth:`load` to re-read.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        # Keys each file held at its last good read: kept serving if the file breaks.
        self._file_keys: dict[Path, frozenset[str]] = {}

    def __repr__(self) -> str:
        return f"FileSource({str(self.path)!r})"

    def files(self) -> list[Path]:
        """The files :meth:`load` reads; raises :class:`ConfigError` if the path is missing."""
        if self.path.is_dir():
            found = [
                p
                for p in self.path.rglob("*")
                if p.suffix in _SUFFIXES
                and p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(self.path).parts)
            ]
            applied = self.path / STATE_DIR / "applied"
            if applied.is_dir():
                found += [p for p in applied.iterdir() if p.suffix in _SUFFIXES and p.is_file()]
            return sorted(found)
        if self.path.is_file():
            return [self.path]
        raise ConfigError(f"{self.path}: no such file or directory")

    def _tombstones(self) -> dict[str, int]:
        folder = self.path / STATE_DIR / "deleted"
        out: dict[str, int] = {}
        if not folder.is_dir():
            return out
        for entry in folder.iterdir():
            try:
                out[entry.read_text(encoding="utf-8").strip()] = entry.stat().st_mtime_ns
            except (OSError, UnicodeDecodeError):
                continue
        return out

    def fingerprint(self) -> tuple[tuple[str, int, int], ...]:
        """(path, mtime_ns, size) of every file: changes when an edit should be reloaded."""
        out = []
        try:
            files = self.files()
        except ConfigError:
            return ()
        deleted = self.path / STATE_DIR / "deleted"
        if self.path.is_dir() and deleted.is_dir():
            files += sorted(deleted.iterdir())
        for file in files:
            try:
                st = file.stat()
            except OSError:
                continue
            out.append((str(file), st.st_mtime_ns, st.st_size))
        return tuple(out)

    def load(self) -> MeshObjects:
        """Read and validate every object; all object errors are reported together."""
        result = self.load_lenient()
        if result.problems:
            raise ConfigError("\n".join(result.problems), result.problems)
        return assemble(result.objects)

    def load_lenient(self) -> LoadResult:
        """Read every object, skipping (and reporting) the invalid ones.

        A file that cannot be read or parsed at all is one problem, and every object it
        held at its last good read is rejected (so its last good version keeps serving);
        a missing path raises :class:`ConfigError`.
        """
        problems: list[str] = []
        broken: set[str] = set()
        candidates: dict[str, _Candidate] = {}
        skipped: Counter[str] = Counter()
        files = self.files()
        file_keys: dict[Path, frozenset[str]] = {}
        for order, file in enumerate(files):
            try:
                docs = list(documents(file))
                mtime = file.stat().st_mtime_ns
            except (ConfigError, OSError) as err:
                problems.append(str(err))
                broken |= self._file_keys.get(file, frozenset())
                if file in self._file_keys:
                    file_keys[file] = self._file_keys[file]
                continue
            keys: set[str] = set()
            failed = False
            for doc in docs:
                candidate = _Candidate((mtime, order), file)
                try:
                    candidate.model = parse_object(doc)
                except ConfigError as err:
                    candidate.errors = tuple(f"{file}: {p}" for p in err.problems)
                    problems += candidate.errors
                    failed = True
                if candidate.model is None and not candidate.errors:
                    skipped[str(doc.get("kind"))] += 1
                    log.debug("%s: skipping %s %s", file, doc.get("kind"), object_id(doc))
                    continue
                key = _key(doc, candidate.model)
                keys.add(key)
                old = candidates.get(key)
                if old is None or old.stamp <= candidate.stamp:
                    candidates[key] = candidate
            if failed:
                # A rejected document may be one of the file's objects with its kind or
                # name mistyped: what the file held before keeps its last good version.
                lost = self._file_keys.get(file, frozenset()) - keys
                broken |= lost
                keys |= lost
            file_keys[file] = frozenset(keys)
        self._file_keys = file_keys
        deleted: set[str] = set()
        for key, when in self._tombstones().items():
            found = candidates.get(key)
            if found is not None and found.stamp[0] <= when:
                del candidates[key]
                deleted.add(key)
        objects = {k: c.model for k, c in candidates.items() if c.model is not None}
        rejected = {k for k, c in candidates.items() if c.errors} | broken
        for key in broken:
            objects.pop(key, None)
        result = LoadResult(
            objects,
            tuple(problems),
            frozenset(rejected),
            tuple(str(f) for f in files),
            dict(skipped),
            frozenset(deleted),
        )
        log.debug("%s: %s", self.path, result.summary())
        return result


def _key(doc: Mapping[str, Any], model: Any) -> str:
    if model is None:
        return object_key(doc)
    kind = str(doc.get("kind"))
    return f"{kind} {model.namespace}/{model.name}"


def documents(file: Path) -> Iterator[Mapping[str, Any]]:
    """Top-level objects of one file, with ``kind: List`` expanded; raises
    :class:`ConfigError` naming the file if it cannot be read or parsed."""
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise ConfigError(f"{file}: cannot read: {reason}") from None
    try:
        raw = [json.loads(text)] if file.suffix == ".json" else list(yaml.load_all(text, _LOADER))
    except json.JSONDecodeError as err:
        raise ConfigError(f"{file}: invalid JSON: {err}") from None
    except yaml.YAMLError as err:
        detail = str(err).replace("\n", " ")
        raise ConfigError(f"{file}: invalid YAML: {detail}") from None
    for index, doc in enumerate(raw):
        yield from _expand(file, doc, f"document {index}")


def _expand(file: Path, doc: Any, where: str) -> Iterator[Mapping[str, Any]]:
    if doc is None:
        return
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{file}: {where}: must be a mapping with a kind")
    if doc.get("kind") == "List":
        items = doc.get("items") or []
        if not isinstance(items, list):
            raise ConfigError(f"{file}: {where}: items: must be a list")
        for i, item in enumerate(items):
            yield from _expand(file, item, f"{where} items[{i}]")
        return
    if not isinstance(doc.get("kind"), str):
        hints = "".join(f"; {e}" for e in unknown_top_level("", doc))
        raise ConfigError(f"{file}: {where}: kind: is required{hints}")
    yield doc
