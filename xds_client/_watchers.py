"""The resource-watcher seam: what a subscriber is told about one resource."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

__all__ = ["CallbackWatcher", "ResourceDoesNotExist", "ResourceWatcher"]

R = TypeVar("R")
R_contra = TypeVar("R_contra", contravariant=True)


class ResourceDoesNotExist(LookupError):
    """The server says the resource does not exist (or never sent it in time)."""


class ResourceWatcher(Protocol[R_contra]):
    """Callbacks run on the xDS client's thread and must return quickly.

    Three kinds of event, as grpc-go's watcher interface splits them:
    - ``on_resource_changed``: a new validated resource;
    - ``on_resource_error``: there is no usable resource (it does not exist, or the
      first one received was invalid);
    - ``on_ambient_error``: something went wrong, but the last good resource stays in use.
    """

    def on_resource_changed(self, name: str, resource: R_contra) -> None: ...

    def on_resource_error(self, name: str, error: Exception) -> None: ...

    def on_ambient_error(self, name: str, error: Exception) -> None: ...


class CallbackWatcher(Generic[R]):
    """A watcher made from plain functions; handy in tests and small programs."""

    def __init__(
        self,
        changed: Callable[[str, R], None],
        error: Callable[[str, Exception], None] | None = None,
        ambient: Callable[[str, Exception], None] | None = None,
    ) -> None:
        self._changed = changed
        self._error = error
        self._ambient = ambient

    def on_resource_changed(self, name: str, resource: R) -> None:
        self._changed(name, resource)

    def on_resource_error(self, name: str, error: Exception) -> None:
        if self._error is not None:
            self._error(name, error)

    def on_ambient_error(self, name: str, error: Exception) -> None:
        if self._ambient is not None:
            self._ambient(name, error)
