"""Field readers shared by every object parser: each names the field path it rejects.

A parser walks one decoded YAML/JSON document with these helpers; the first bad field
raises :class:`FieldError` with a path such as ``spec.http[0].route[1].weight``, which
the parser wraps into a :class:`ConfigError` naming the kind and ``namespace/name``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "DNS_LABEL",
    "DNS_SUBDOMAIN",
    "ConfigError",
    "FieldError",
    "as_bool",
    "as_duration",
    "as_float",
    "as_int",
    "as_labels",
    "as_list",
    "as_mapping",
    "as_percent",
    "as_port",
    "as_str",
    "as_str_list",
    "dns_name",
    "metadata",
    "object_id",
    "one_of",
    "wrap",
]

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|us|µs|ns|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


class ConfigError(ValueError):
    """Configuration that cannot be loaded; ``problems`` holds one line per fault."""

    def __init__(self, message: str, problems: tuple[str, ...] | None = None) -> None:
        super().__init__(message)
        self.problems: tuple[str, ...] = problems if problems is not None else (message,)


class FieldError(Exception):
    """One bad field: ``path`` as the user wrote it, and what is wrong."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


def as_mapping(value: Any, path: str, *, required: bool = False) -> Mapping[str, Any]:
    """A mapping, ``{}`` if absent and not required."""
    if value is None:
        if required:
            raise FieldError(path, "is required")
        return {}
    if not isinstance(value, Mapping):
        raise FieldError(path, "must be a mapping")
    return value


def as_list(value: Any, path: str, *, required: bool = False) -> list[Any]:
    """A list, ``[]`` if absent and not required."""
    if value is None:
        if required:
            raise FieldError(path, "is required")
        return []
    if not isinstance(value, list):
        raise FieldError(path, "must be a list")
    return value


def as_str(value: Any, path: str, *, required: bool = False) -> str | None:
    """A string (non-empty if required), ``None`` if absent."""
    if value is None:
        if required:
            raise FieldError(path, "is required")
        return None
    if not isinstance(value, str):
        raise FieldError(path, "must be a string")
    if required and not value:
        raise FieldError(path, "must not be empty")
    return value


def as_str_list(value: Any, path: str, *, required: bool = False) -> tuple[str, ...]:
    """A list of non-empty strings."""
    items = as_list(value, path, required=required)
    if required and not items:
        raise FieldError(path, "must not be empty")
    return tuple(str(as_str(v, f"{path}[{i}]", required=True)) for i, v in enumerate(items))


def as_bool(value: Any, path: str) -> bool | None:
    """``true``/``false``, ``None`` if absent."""
    if value is None or isinstance(value, bool):
        return value
    raise FieldError(path, "must be true or false")


def as_int(value: Any, path: str, *, minimum: int = 0, maximum: int = 2**32 - 1) -> int | None:
    """An integer within bounds, ``None`` if absent."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise FieldError(path, f"must be an integer {minimum}-{maximum}")
    return value


def as_float(value: Any, path: str, *, minimum: float, maximum: float) -> float | None:
    """A number within bounds, ``None`` if absent."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FieldError(path, "must be a number")
    if not minimum <= value <= maximum:
        raise FieldError(path, f"must be between {minimum:g} and {maximum:g}")
    return float(value)


def as_port(value: Any, path: str) -> int:
    """A required port number 1-65535."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise FieldError(path, "must be an integer 1-65535")
    return value


def as_percent(value: Any, path: str) -> float | None:
    """Istio's ``Percent`` message (``{value: 0-100}``), ``None`` if absent."""
    if value is None:
        return None
    return as_float(
        as_mapping(value, path).get("value", 0.0), f"{path}.value", minimum=0, maximum=100
    )


def as_duration(value: Any, path: str, *, positive: bool = False) -> float | None:
    """A protobuf-JSON duration such as ``"1.5s"``, ``"100ms"`` or ``"1m30s"``, in seconds."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise FieldError(path, 'must be a duration string such as "1s" or "100ms"')
    pos, total = 0, 0.0
    while pos < len(value):
        m = _DURATION_PART.match(value, pos)
        if m is None:
            raise FieldError(path, f'{value!r} is not a duration such as "1s" or "100ms"')
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if positive and total <= 0:
        raise FieldError(path, "must be positive")
    return total


def as_labels(value: Any, path: str) -> dict[str, str]:
    """A string-to-string mapping."""
    out: dict[str, str] = {}
    for key, val in as_mapping(value, path).items():
        out[str(key)] = as_str(val, f"{path}[{key}]") or ""
    return out


def one_of(value: Any, path: str, allowed: tuple[str, ...], default: str) -> str:
    """An enum given as a string, ``default`` if absent."""
    text = as_str(value, path) or default
    if text not in allowed:
        raise FieldError(path, f"{text!r} is not one of {', '.join(allowed)}")
    return text


def dns_name(value: Any, path: str, pattern: re.Pattern[str], max_len: int) -> str:
    """A required DNS label or subdomain."""
    text = as_str(value, path, required=True)
    assert text is not None
    if len(text) > max_len or not pattern.match(text):
        raise FieldError(path, f"{text!r} is not a valid DNS name")
    return text


def metadata(doc: Mapping[str, Any]) -> tuple[str, str, dict[str, str]]:
    """``(name, namespace, labels)`` of an object; namespace defaults to ``default``."""
    meta = as_mapping(doc.get("metadata"), "metadata", required=True)
    name = dns_name(meta.get("name"), "metadata.name", DNS_SUBDOMAIN, 253)
    namespace = dns_name(meta.get("namespace", "default"), "metadata.namespace", DNS_LABEL, 63)
    return name, namespace, as_labels(meta.get("labels"), "metadata.labels")


def object_id(doc: Mapping[str, Any]) -> str:
    """``<namespace>/<name>`` as well as a possibly malformed document allows."""
    meta = doc.get("metadata")
    if not isinstance(meta, Mapping):
        return "<unnamed>"
    ns = meta.get("namespace", "default")
    return f"{ns}/{meta.get('name', '<unnamed>')}"


def wrap(kind: str, doc: Mapping[str, Any], err: FieldError) -> ConfigError:
    """``<kind> <namespace>/<name>: <path>: <problem>``."""
    return ConfigError(f"{kind} {object_id(doc)}: {err}")
