"""Strict reading of bootstrap JSON: decoding, typed accessors and unknown-key checks.

Every problem is a :class:`BootstrapError` whose message starts with the source (the
file, or ``GRPC_XDS_BOOTSTRAP_CONFIG``) and names the JSON path of the bad value, in
gRPC's notation: ``xds_servers[0].channel_creds[0].type``.

Decoding is as strict as gRPC C-core's JSON reader: UTF-8 only, no duplicate keys, no
``NaN``/``Infinity``. Values must also survive the trip into protobuf: no lone
surrogates, finite numbers, and ``node.metadata`` no deeper than upb (protobuf's Python
runtime, and the C one gRPC uses) decodes.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Literal

__all__ = ["BootstrapError", "Reader", "UnknownFields", "decode_json", "field_path"]

log = logging.getLogger("xds_client.bootstrap")

UnknownFields = Literal["error", "warn"]

#: upb decodes at most 100 nested sub-messages below the top-level message; the
#: metadata Struct sits below DiscoveryRequest and Node, so its own nesting (Struct,
#: map entry, Value, ListValue each count one) may reach 100 - 2 + 1 levels.
PROTOBUF_RECURSION_LIMIT = 100
METADATA_MAX_DEPTH = PROTOBUF_RECURSION_LIMIT - 1
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_MAX_DOUBLE = 1.7976931348623157e308


class BootstrapError(ValueError):
    """The bootstrap is missing or invalid; the message names the source and field.

    ``source`` is the file (or ``GRPC_XDS_BOOTSTRAP_CONFIG``), ``path`` the JSON path of
    the bad value ("" when the problem is the file as a whole).
    """

    def __init__(self, message: str, *, source: str = "", path: str = "") -> None:
        super().__init__(message)
        self.source = source
        self.path = path


def field_path(parent: str, key: str) -> str:
    """``parent.key``, or ``parent["odd key"]`` for keys that are not identifiers."""
    if _IDENT.match(key):
        return f"{parent}.{key}" if parent else key
    return f"{parent}[{json.dumps(key)}]"


def decode_json(data: bytes | str, source: str) -> Any:
    """JSON text to Python values, refusing what gRPC's JSON reader refuses."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise BootstrapError(
                f"{source}: not UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start} "
                f"(line {line})",
                source=source,
            ) from None
    else:
        text = data
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise BootstrapError(
            f"{source}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
            source=source,
        ) from None
    except _JsonProblem as exc:
        raise BootstrapError(f"{source}: invalid JSON: {exc}", source=source) from None
    except RecursionError:
        raise BootstrapError(f"{source}: invalid JSON: nested too deeply", source=source) from None
    except ValueError as exc:  # e.g. an integer literal longer than Python converts
        raise BootstrapError(f"{source}: invalid JSON: {exc}", source=source) from None


class _JsonProblem(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _JsonProblem(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise _JsonProblem(f"{name} is not JSON")


class Reader:
    """Typed accessors that raise ``source: json.path: problem``."""

    def __init__(self, source: str, unknown_fields: UnknownFields = "error") -> None:
        self.source = source
        self.unknown_fields = unknown_fields
        #: (JSON path, file name) of every file named, checked when the bootstrap loads
        self.files: list[tuple[str, str]] = []

    def fail(self, path: str, problem: str) -> BootstrapError:
        where = f"{path}: " if path else ""
        return BootstrapError(f"{self.source}: {where}{problem}", source=self.source, path=path)

    def obj(self, value: Any, path: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(path, f"must be a JSON object, got {kind(value)}")
        return value

    def fields(
        self,
        value: Any,
        path: str,
        known: Collection[str],
        *,
        required: Iterable[str] = (),
        ignored: Collection[str] = (),
    ) -> Mapping[str, Any]:
        """An object whose keys must be among ``known`` (``ignored`` are accepted and
        dropped); ``required`` keys must be present."""
        entry = self.obj(value, path)
        for key in entry:
            if key not in known and key not in ignored:
                self.unknown(path, key, known, also=ignored)
        for key in required:
            if key not in entry:
                raise self.fail(field_path(path, key), "is required")
        return entry

    def unknown(
        self, path: str, key: str, known: Collection[str], *, also: Collection[str] = ()
    ) -> None:
        """An unknown ``key`` in the object at ``path``: an error (or a warning), naming
        the nearest of ``known`` and ``also`` (accepted but unlisted keys)."""
        where = field_path(path, _escaped(key))
        message = f"unknown field{near_miss(key, [*known, *also])}"
        if self.unknown_fields == "warn":
            log.warning("%s: %s: %s (ignored)", self.source, where, message)
            return
        raise self.fail(where, f"{message} (known: {', '.join(sorted(known))})")

    def array(self, value: Any, path: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(path, f"must be a JSON array, got {kind(value)}")
        return value

    def string(self, value: Any, path: str, *, required: bool = False) -> str:
        if value is None and not required:
            return ""
        if not isinstance(value, str) or (required and not value):
            raise self.fail(path, f"must be a non-empty string, got {kind(value)}")
        return value

    def file(self, value: Any, path: str) -> str:
        """A file name (or ""), remembered for the existence check at load."""
        name = self.string(value, path)
        if name:
            self.files.append((path, name))
        return name

    def json_value(self, value: Any, path: str, *, max_depth: int | None = None) -> None:
        """Check ``value`` is plain JSON protobuf can carry (iteratively, any depth):
        string keys, valid Unicode, finite numbers; at most ``max_depth`` protobuf
        Struct levels (a Struct, map entry, Value or ListValue is one level each)."""
        # (value, path, protobuf level of the Value holding it; the top is no Value)
        stack: list[tuple[Any, str, int]] = [(value, path, 0)]
        while stack:
            item, where, depth = stack.pop()
            # a Struct or ListValue is one level below the Value that holds it
            levels = depth + 1 if isinstance(item, Mapping | list) else depth
            if max_depth is not None and levels > max_depth:
                raise self.fail(
                    where,
                    f"nested too deeply: more than {max_depth} protobuf levels "
                    f"(protobuf's recursion limit is {PROTOBUF_RECURSION_LIMIT})",
                )
            if isinstance(item, Mapping):
                children: list[tuple[Any, str, int]] = []
                for key, child in item.items():
                    if not isinstance(key, str):
                        raise self.fail(where, f"object key {key!r} is not a string")
                    self._unicode(key, field_path(where, _escaped(key)), "key")
                    # Struct (+1), its map entry (+1), the entry's Value (+1)
                    children.append((child, field_path(where, key), depth + 3))
                stack.extend(reversed(children))
            elif isinstance(item, list):
                # ListValue (+1), its Value (+1)
                stack.extend(
                    (child, f"{where}[{i}]", depth + 2)
                    for i, child in reversed(list(enumerate(item)))
                )
            elif isinstance(item, str):
                self._unicode(item, where, "string")
            elif isinstance(item, bool) or item is None:
                pass
            elif isinstance(item, int | float):
                if not math.isfinite(item) or abs(item) > _MAX_DOUBLE:
                    raise self.fail(where, f"number {item!r} is not a finite double")
            else:
                raise self.fail(where, f"must be a JSON value, got {type(item).__name__}")

    def _unicode(self, text: str, where: str, what: str) -> None:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise self.fail(
                where, f"{what} holds an unpaired surrogate U+{ord(text[exc.start]):04X}"
            ) from None


def _escaped(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def near_miss(key: Any, known: Collection[str]) -> str:
    """`` (did you mean 'x'?)`` for a key close to a known one, else "": the same but
    for case, one or two edits away (a transposition is one), or similar by difflib."""
    if not isinstance(key, str) or not known:
        return ""
    lowered = {k.lower(): k for k in known}
    if key.lower() in lowered:
        return f" (did you mean {lowered[key.lower()]!r}?)"
    allowed = 1 if len(key) < 5 else 2
    distance, best = min((_edits(key.lower(), k.lower()), k) for k in known)
    if distance <= allowed:
        return f" (did you mean {best!r}?)"
    match = difflib.get_close_matches(key, list(known), n=1, cutoff=0.75)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _edits(a: str, b: str) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions and
    transpositions of neighbours each count one."""
    if abs(len(a) - len(b)) > 2:
        return 3
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        row = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                row[j] = min(row[j], prev2[j - 2] + 1)
        prev2, prev = prev, row
    return prev[-1]


def kind(value: Any) -> str:
    """The JSON type name of a decoded value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    return "array" if isinstance(value, list) else type(value).__name__
