"""Errors the engine raises. Adapters re-raise them as their client library's exceptions."""

from __future__ import annotations

__all__ = ["MeshError", "NoHealthyUpstream", "RouteNotFound", "TargetNotResolved"]


class MeshError(Exception):
    """A request the mesh could not carry. ``cluster`` and ``reason`` say where and why."""

    def __init__(
        self, message: str, *, target: str = "", cluster: str = "", reason: str = ""
    ) -> None:
        super().__init__(message)
        self.target = target
        self.cluster = cluster
        self.reason = reason or type(self).__name__


class TargetNotResolved(MeshError):
    """The control plane did not resolve the target in time, or reported an error for it."""


class RouteNotFound(MeshError):
    """The target exists but no virtual host or route matches (Envoy answers 404)."""


class NoHealthyUpstream(MeshError):
    """The chosen cluster has no usable endpoint (Envoy answers 503 'no healthy upstream')."""
