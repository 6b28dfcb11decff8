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
from pathlib import Path
from typing import Any, Protocol

import yaml

from ._objects import (
    ConfigError,
    EndpointSlice,
    MeshObjects,
    Service,
    object_id,
    parse_endpoint_slice,
    parse_service,
)

__all__ = ["FileSource", "Source"]

log = logging.getLogger(__name__)

_SUFFIXES = (".yaml", ".yml", ".json")
_PARSERS: dict[str, Callable[[Mapping[str, Any]], Service | EndpointSlice]] = {
    "Service": parse_service,
    "EndpointSlice": parse_endpoint_slice,
}


class Source(Protocol):
    """Where the control plane's objects come from."""

    def load(self) -> MeshObjects:
        """Read every object now; raise :class:`ConfigError` if any is invalid."""
        ...


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

    def load(self) -> MeshObjects:
        """Read and validate every object; all object errors are reported together."""
        services: list[Service] = []
        slices: list[EndpointSlice] = []
        problems: list[str] = []
        seen: dict[str, Path] = {}
        for file in self.files():
            for doc in _documents(file):
                kind = doc.get("kind")
                parser = _PARSERS.get(kind) if isinstance(kind, str) else None
                if parser is None:
                    log.debug("%s: skipping %s %s", file, kind, object_id(doc))
                    continue
                try:
                    obj = parser(doc)
                except ConfigError as err:
                    problems.append(f"{file}: {err}")
                    continue
                key = f"{kind} {obj.namespace}/{obj.name}"
                if key in seen:
                    problems.append(f"{file}: {key}: already defined in {seen[key]}")
                    continue
                seen[key] = file
                if isinstance(obj, Service):
                    services.append(obj)
                else:
                    slices.append(obj)
        if problems:
            raise ConfigError("\n".join(problems), tuple(problems))
        log.debug("%s: %d services, %d endpoint slices", self.path, len(services), len(slices))
        return MeshObjects(services=tuple(services), endpoint_slices=tuple(slices))


def _documents(file: Path) -> Iterator[Mapping[str, Any]]:
    """Top-level objects of one file, with ``kind: List`` expanded."""
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise ConfigError(f"{file}: cannot read: {reason}") from None
    try:
        raw = [json.loads(text)] if file.suffix == ".json" else list(yaml.safe_load_all(text))
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
