"""Sources of Kubernetes objects for the control plane.

A source is anything with a ``load()`` returning :class:`MeshObjects`; the embedded
default is :class:`FileSource`, which reads the same YAML one would ``kubectl apply``.
A Kubernetes API watcher is a later source behind the same seam.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from ..objects._fields import ConfigError, object_id
from ..objects._istio_mesh import (
    AuthorizationPolicy,
    PeerAuthentication,
    ServiceEntry,
    Sidecar,
    WorkloadEntry,
    parse_authorization_policy,
    parse_peer_authentication,
    parse_service_entry,
    parse_sidecar,
    parse_workload_entry,
)
from ..objects._istio_networking import VirtualService, parse_virtual_service
from ..objects._istio_policy import DestinationRule, parse_destination_rule
from ..objects._kubernetes import (
    EndpointSlice,
    MeshObjects,
    Pod,
    Service,
    parse_endpoint_slice,
    parse_endpoints,
    parse_pod,
    parse_service,
)

__all__ = ["FileSource", "LoadResult", "Source", "assemble"]

log = logging.getLogger(__name__)

_SUFFIXES = (".yaml", ".yml", ".json")
# libyaml's parser when PyYAML was built with it (about 10x faster), else the Python one.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_PARSERS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "Service": parse_service,
    "EndpointSlice": parse_endpoint_slice,
    "Endpoints": parse_endpoints,
    "Pod": parse_pod,
    "VirtualService": parse_virtual_service,
    "DestinationRule": parse_destination_rule,
    "ServiceEntry": parse_service_entry,
    "WorkloadEntry": parse_workload_entry,
    "PeerAuthentication": parse_peer_authentication,
    "AuthorizationPolicy": parse_authorization_policy,
    "Sidecar": parse_sidecar,
}
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

    ``problems`` holds one message per rejected object or file, naming the file, kind,
    ``namespace/name`` and field; ``rejected`` the keys of the objects it names (so a
    caller may keep serving their previous versions).
    """

    objects: Mapping[str, Any]
    problems: tuple[str, ...] = ()
    rejected: frozenset[str] = frozenset()


def assemble(objects: Mapping[str, Any]) -> MeshObjects:
    """Group models (as :class:`LoadResult` holds them) into :class:`MeshObjects`."""
    groups: dict[str, list[Any]] = {name: [] for name in _FIELDS.values()}
    for key in sorted(objects):
        obj = objects[key]
        groups[_FIELDS[type(obj)]].append(obj)
    return MeshObjects(**{name: tuple(items) for name, items in groups.items()})


class FileSource:
    """Objects from a YAML/JSON file or a directory of them (not recursive).

    Files ending in ``.yaml``, ``.yml`` or ``.json`` are read in name order. YAML files
    may hold several documents; ``kind: List`` documents are expanded. Kinds the control
    plane does not use are skipped. Call :meth:`load` again to re-read the files.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"FileSource({str(self.path)!r})"

    def files(self) -> list[Path]:
        """The files :meth:`load` reads; raises :class:`ConfigError` if the path is missing."""
        if self.path.is_dir():
            return sorted(p for p in self.path.iterdir() if p.suffix in _SUFFIXES and p.is_file())
        if self.path.is_file():
            return [self.path]
        raise ConfigError(f"{self.path}: no such file or directory")

    def fingerprint(self) -> tuple[tuple[str, int, int], ...]:
        """(path, mtime_ns, size) of every file: changes when an edit should be reloaded."""
        out = []
        try:
            files = self.files()
        except ConfigError:
            return ()
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

        A file that cannot be read or parsed at all is one problem; a missing path
        raises :class:`ConfigError`.
        """
        objects: dict[str, Any] = {}
        problems: list[str] = []
        rejected: set[str] = set()
        seen: dict[str, Path] = {}
        for file in self.files():
            try:
                docs = list(_documents(file))
            except ConfigError as err:
                problems.append(str(err))
                continue
            for doc in docs:
                kind = doc.get("kind")
                parser = _PARSERS.get(kind) if isinstance(kind, str) else None
                if parser is None:
                    log.debug("%s: skipping %s %s", file, kind, object_id(doc))
                    continue
                try:
                    obj = parser(doc)
                except ConfigError as err:
                    problems.append(f"{file}: {err}")
                    rejected.add(f"{kind} {object_id(doc)}")
                    continue
                key = f"{kind} {obj.namespace}/{obj.name}"
                if key in seen:
                    problems.append(f"{file}: {key}: already defined in {seen[key]}")
                    continue
                seen[key] = file
                objects[key] = obj
        log.debug("%s: %d objects, %d problems", self.path, len(objects), len(problems))
        return LoadResult(objects, tuple(problems), frozenset(rejected))


def _documents(file: Path) -> Iterator[Mapping[str, Any]]:
    """Top-level objects of one file, with ``kind: List`` expanded."""
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
        raise ConfigError(f"{file}: {where}: kind: is required")
    yield doc
