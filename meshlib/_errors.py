"""Errors the engine raises. Adapters re-raise them as their client library's exceptions."""

from __future__ import annotations

__all__ = [
    "CircuitBreakerOpen",
    "MeshClosed",
    "MeshError",
    "NoHealthyUpstream",
    "Overloaded",
    "RequestDropped",
    "RouteNotFound",
    "TargetNotResolved",
    "UpstreamTimeout",
]


class MeshError(Exception):
    """A request the mesh could not carry. ``cluster`` and ``reason`` say where and why."""

    def __init__(
        self, message: str, *, target: str = "", cluster: str = "", reason: str = ""
    ) -> None:
        super().__init__(message)
        self.target = target
        self.cluster = cluster
        self.reason = reason or type(self).__name__


class MeshClosed(MeshError):
    """The call was made after ``Mesh.close()`` (reason ``closed``): nothing routes."""


class TargetNotResolved(MeshError):
    """The control plane did not resolve the target in time, or reported an error for it."""


class RouteNotFound(MeshError):
    """The target exists but no virtual host or route matches (Envoy answers 404)."""


class NoHealthyUpstream(MeshError):
    """The chosen cluster has no usable endpoint (Envoy answers 503 'no healthy upstream')."""


class UpstreamTimeout(MeshError):
    """The route timeout passed before the upstream answered (Envoy answers 504)."""


class Overloaded(MeshError):
    """The request was shed locally, without reaching an endpoint, because the cluster
    is overloaded: Envoy answers HTTP 503 (a gRPC caller sees UNAVAILABLE). Never retried."""

    http_status = 503
    grpc_status = 14  # UNAVAILABLE


class CircuitBreakerOpen(Overloaded):
    """A cluster circuit-breaker threshold is full (reason ``overflow``): the request fails
    fast without reaching an endpoint. Envoy answers such a request with HTTP 503 and
    ``x-envoy-overloaded: true`` (a gRPC caller sees UNAVAILABLE); ``limit`` names the
    threshold (``max_requests``, ``max_pending_requests``, ``max_connections``)."""

    def __init__(
        self, message: str, *, target: str = "", cluster: str = "", limit: str = ""
    ) -> None:
        super().__init__(message, target=target, cluster=cluster, reason="overflow")
        self.limit = limit


class RequestDropped(Overloaded):
    """The cluster's EDS ``policy.drop_overloads`` dropped the request (reason
    ``drop_overload``) before host selection, once per request (retries are not drawn
    again). Envoy answers HTTP 503 ``drop overload`` with ``x-envoy-drop-overload: true``
    and counts ``upstream_rq_drop_overload``; gRPC's xDS client fails the call with
    UNAVAILABLE. ``category`` is the drop category that matched; ``unconditional``: it
    drops every request (Envoy then answers ``unconditional drop overload``, flag UDO)."""

    def __init__(
        self,
        message: str,
        *,
        target: str = "",
        cluster: str = "",
        category: str = "",
        unconditional: bool = False,
    ) -> None:
        super().__init__(message, target=target, cluster=cluster, reason="drop_overload")
        self.category = category
        self.unconditional = unconditional
