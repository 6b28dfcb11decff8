"""``meshlib apply`` / ``delete`` / ``validate``: a config folder changed as ``kubectl`` would.

An applied object is stored under ``<config>/.meshlib/applied/`` (one file per object,
written atomically); a deleted one leaves a record under ``.meshlib/deleted/`` that the
loader honours while no newer file defines the object, so deleting an object that also
lives in a user's file works. A control plane watching the folder writes a status file
after each reload (the files it read, its snapshot version and the problems) in the
temporary directory, named for the folder (:func:`status_path`: nothing is written into
a folder merely served); that is how the CLI waits for a change to be served.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .objects._fields import ConfigError, object_id
from .objects._parse import object_key, parse_object
from .objects._schema import clean
from .sources._files import STATE_DIR, FileSource, LoadResult, documents, tombstone_path

__all__ = [
    "Change",
    "apply_objects",
    "delete_objects",
    "read_inputs",
    "resource_name",
    "status_path",
    "wait_for_reload",
    "write_status",
]



def status_path(config: Path) -> Path:
    """Where a control plane watching ``config`` reports its reloads."""
    digest = hashlib.sha256(str(config.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "meshlib-status" / f"{digest}.json"


@dataclass(frozen=True)
class Change:
    """What ``apply``/``delete`` did to one object: ``created``, ``configured``,
    ``unchanged``, ``deleted``, ``skipped`` or ``not found``; ``file`` is what was written."""

    key: str
    name: str
    action: str
    file: Path | None = None


def resource_name(doc: Mapping[str, Any]) -> str:
    """kubectl's ``virtualservice.networking.istio.io/reviews`` (``service/reviews``)."""
    group = str(doc.get("apiVersion") or "").rpartition("/")[0]
    kind = str(doc.get("kind")).lower()
    name = object_id(doc).split("/", 1)[1]
    return f"{kind}.{group}/{name}" if group else f"{kind}/{name}"


def read_inputs(paths: Iterable[str | os.PathLike[str]]) -> list[tuple[Path, Mapping[str, Any]]]:
    """Every document of ``paths`` (files, or folders read recursively), in order.

    Raises :class:`ConfigError` listing every file that cannot be read or parsed.
    """
    out: list[tuple[Path, Mapping[str, Any]]] = []
    problems: list[str] = []
    for path in paths:
        for file in FileSource(path).files():
            try:
                out += [(file, doc) for doc in documents(file)]
            except ConfigError as err:
                problems.append(str(err))
    if problems:
        raise ConfigError("\n".join(problems), tuple(problems))
    return out


def _validate(inputs: list[tuple[Path, Mapping[str, Any]]]) -> list[tuple[Mapping[str, Any], Any]]:
    """(document, model) of each input; every invalid object is reported, none applied."""
    problems: list[str] = []
    out = []
    for file, doc in inputs:
        try:
            out.append((doc, parse_object(doc)))
        except ConfigError as err:
            problems += [f"{file}: {p}" for p in err.problems]
    if problems:
        raise ConfigError("\n".join(problems), tuple(problems))
    return out


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(tmp, path)


def _applied_path(root: Path, key: str) -> Path:
    return (
        tombstone_path(root, key).parent.parent
        / "applied"
        / (tombstone_path(root, key).name + ".yaml")
    )


def apply_objects(config: Path, paths: Iterable[str | os.PathLike[str]]) -> list[Change]:
    """Apply every object of ``paths`` to the folder ``config`` (all or nothing)."""
    inputs = read_inputs(paths)
    validated = _validate(inputs)
    current = FileSource(config).load_lenient()
    changes: list[Change] = []
    for doc, model in validated:
        name = resource_name(doc)
        if model is None:
            changes.append(Change(object_key(doc), name, "skipped (kind not used by the mesh)"))
            continue
        key = f"{doc.get('kind')} {model.namespace}/{model.name}"
        old = current.objects.get(key)
        tomb = tombstone_path(config, key)
        if old == model and not tomb.exists():
            changes.append(Change(key, name, "unchanged"))
            continue
        target = _applied_path(config, key)
        _write_atomic(target, yaml.safe_dump(clean(doc), sort_keys=False))
        tomb.unlink(missing_ok=True)
        changes.append(Change(key, name, "configured" if old is not None else "created", target))
    return changes


def delete_objects(config: Path, paths: Iterable[str | os.PathLike[str]]) -> list[Change]:
    """Delete every object named in ``paths`` from the folder ``config``."""
    current = FileSource(config).load_lenient()
    changes: list[Change] = []
    for _, doc in read_inputs(paths):
        key, name = object_key(doc), resource_name(doc)
        if key not in current.objects and key not in current.rejected:
            changes.append(Change(key, name, "not found"))
            continue
        _applied_path(config, key).unlink(missing_ok=True)
        tomb = tombstone_path(config, key)
        _write_atomic(tomb, key + "\n")
        changes.append(Change(key, name, "deleted", tomb))
    return changes


def write_status(config: Path, result: LoadResult, version: str, problems: Iterable[str]) -> None:
    """Record what a control plane serving ``config`` has loaded (see the module doc)."""
    seen = {}
    files = [Path(f) for f in result.files] + _records(config / STATE_DIR / "deleted")
    for file in files:
        try:
            seen[str(file)] = file.stat().st_mtime_ns
        except OSError:
            continue
    status = {
        "pid": os.getpid(),
        "version": version,
        "time": time.time(),
        "files": seen,
        "problems": list(problems),
    }
    _write_atomic(status_path(config), json.dumps(status, indent=1))


def _records(folder: Path) -> list[Path]:
    return sorted(folder.iterdir()) if folder.is_dir() else []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_for_reload(
    config: Path, changes: list[Change], timeout: float
) -> tuple[bool, list[str]] | None:
    """Wait until the control plane serving ``config`` has read every changed file.

    Returns None when no control plane is running on the folder, else (reloaded in time,
    the problems it reports for the changed objects).
    """
    status_file = status_path(config)
    try:
        status = json.loads(status_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not _alive(int(status.get("pid", 0))):
        return None
    wanted = {}
    for change in changes:
        if change.file is not None:
            wanted[str(change.file)] = change.file.stat().st_mtime_ns
    keys = {c.key for c in changes}
    deadline = time.monotonic() + timeout
    while True:
        try:
            status = json.loads(status_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            status = {}
        files = status.get("files", {})
        if all(files.get(path) == mtime for path, mtime in wanted.items()):
            found = [p for p in status.get("problems", []) if any(f"{k}:" in p for k in keys)]
            return True, found
        if time.monotonic() > deadline:
            return False, []
        time.sleep(0.05)
