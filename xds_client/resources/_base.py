"""The resource-type seam: decode an ``Any`` from the wire into a validated, immutable model."""

from __future__ import annotations

from typing import Any, Generic, Protocol, TypeVar

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message

__all__ = ["ResourceError", "ResourceType", "duration_seconds", "unpack", "unpack_nested"]

R_co = TypeVar("R_co", covariant=True)
M = TypeVar("M", bound=Message)


class ResourceError(ValueError):
    """A resource failed validation. ``str()`` is the NACK error_detail."""

    def __init__(self, type_name: str, name: str, field: str, problem: str) -> None:
        self.type_name = type_name
        self.name = name
        self.field = field
        self.problem = problem
        where = f"{type_name} {name!r}" if name else type_name
        super().__init__(f"{where}: {field}: {problem}" if field else f"{where}: {problem}")


class ResourceType(Protocol, Generic[R_co]):
    """One xDS resource type: its type URL and a strict decoder."""

    @property
    def type_url(self) -> str: ...

    @property
    def type_name(self) -> str:
        """Short name used in messages, e.g. ``Listener``."""
        ...

    @property
    def all_resources_required_in_sotw(self) -> bool:
        """True for LDS/CDS: a SotW response lists every subscribed resource, so absence
        means the resource does not exist."""
        ...

    def decode(self, resource: any_pb2.Any) -> tuple[str, R_co]:
        """Decode and validate; raise ResourceError naming the resource and field."""
        ...


def unpack(resource: any_pb2.Any, cls: type[M], type_name: str, name: str = "") -> M:
    """Unpack ``resource`` into ``cls`` or raise ResourceError."""
    msg: M = cls()
    expected = f"type.googleapis.com/{msg.DESCRIPTOR.full_name}"
    if resource.type_url != expected:
        raise ResourceError(
            type_name, name, "type_url", f"expected {expected}, got {resource.type_url}"
        )
    try:
        msg.ParseFromString(resource.value)
    except DecodeError as exc:
        raise ResourceError(type_name, name, "", f"cannot decode protobuf: {exc}") from None
    return msg


def unpack_nested(resource: Any, cls: type[M], error: ResourceError) -> M:
    """Unpack a nested ``Any`` (a filter or transport socket config) into ``cls``;
    raise ``error`` if its type differs or its bytes do not decode."""
    msg: M = cls()
    try:
        ok = resource.Unpack(msg)
    except DecodeError:
        ok = False
    if not ok:
        raise error
    return msg


def duration_seconds(msg: Any, field: str) -> float | None:
    """A google.protobuf.Duration field as seconds, or None when unset."""
    if not msg.HasField(field):
        return None
    d = getattr(msg, field)
    return float(d.seconds) + float(d.nanos) / 1e9
