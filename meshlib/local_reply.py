"""Local replies: what the mesh answers itself, with Envoy's meaning.

When the mesh decides a call's result without an upstream response (no route, no
healthy upstream, breaker overflow, timeouts, connection failures after retries, fault
aborts, drop_overloads, an inbound RBAC denial), :func:`for_error`, :func:`for_failure`
and :func:`fault_abort` say what Envoy 1.40 would answer on the same xDS: the HTTP
status, body, ``x-envoy-*`` headers, the gRPC status and the response flag (Istio's
``response_flags``). This module is the one place that decides it; the HTTP adapters
turn a :class:`LocalReply` into a response (the default, ``local_replies="envoy"``) or a
typed exception (``local_replies="raise"``), the gRPC adapters into a status.

Flags (Envoy's access-log names): ``NR`` no route, ``UH`` no healthy upstream, ``UO``
overflow, ``UT`` upstream request timeout, ``UF`` upstream connect failure, ``UC``
connection termination, ``UR`` remote reset, ``URX`` retries exhausted (with the
failure's own flag: ``URX,UF``), ``FI`` fault abort, ``DI`` fault delay, ``DO`` /
``UDO`` drop_overload, ``RBAC`` denied by an authorization policy, ``RL`` the local
rate limit (:func:`rate_limited`). A route's
``direct_response`` and ``redirect`` are answered here too (:func:`direct_response`,
:func:`redirect`; no flag): like a fault abort they are the configured answer, so
``local_replies="raise"`` gives them as responses (:attr:`LocalReply.configured`).
"""

from __future__ import annotations

from ._errors import (
    CircuitBreakerOpen,
    MeshError,
    NoHealthyUpstream,
    RequestDropped,
    RouteNotFound,
    TargetNotResolved,
    UpstreamTimeout,
)
from ._outcome import Outcome, OutcomeKind

__all__ = [
    "GRPC_FOR_HTTP",
    "LOCAL_REPLY_MODES",
    "LocalReply",
    "check_local_replies",
    "direct_response",
    "fault_abort",
    "for_error",
    "for_failure",
    "rate_limited",
    "rbac_denied",
    "redirect",
]

#: The values ``Mesh(local_replies=...)`` takes.
LOCAL_REPLY_MODES = ("envoy", "raise")

UNAVAILABLE, DEADLINE_EXCEEDED, UNIMPLEMENTED, PERMISSION_DENIED = 14, 4, 12, 7
RESOURCE_EXHAUSTED = 8
_TEXT = (("content-type", "text/plain"),)
#: Envoy's Grpc::Utility::httpToGrpcStatus: the gRPC status a gRPC caller gets for a
#: local HTTP status (else UNKNOWN).
GRPC_FOR_HTTP = {400: 13, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 14}
_RESET_BEFORE = "upstream connect error or disconnect/reset before headers."
#: Reasons of replies that are the configuration's answer, not a failure.
_CONFIGURED = frozenset({"fault_abort", "direct_response", "redirect"})


def check_local_replies(value: str) -> str:
    """``value`` when it is a mode of :data:`LOCAL_REPLY_MODES`, else ValueError."""
    if value not in LOCAL_REPLY_MODES:
        raise ValueError(f"local_replies must be 'envoy' or 'raise', got {value!r}")
    return value


class LocalReply:
    """One answer the mesh gives itself: ``status`` and ``body`` as Envoy sends them,
    ``headers`` (``content-type`` and the ``x-envoy-*`` ones; the adapter adds
    ``content-length``), ``grpc_status`` for gRPC callers, the response ``flag`` and the
    ``reason`` (``no_route``, ``overflow``, ...) with the ``cluster`` it concerns.
    ``error`` is the engine's exception behind it, when there is one. Immutable."""

    __slots__ = ("body", "cluster", "error", "flag", "grpc_status", "headers", "reason", "status")

    def __init__(
        self,
        status: int,
        body: bytes,
        flag: str,
        reason: str,
        *,
        cluster: str = "",
        headers: tuple[tuple[str, str], ...] = _TEXT,
        grpc_status: int = UNAVAILABLE,
        error: MeshError | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.flag = flag
        self.reason = reason
        self.cluster = cluster
        self.headers = headers if body else tuple(h for h in headers if h[0] != "content-type")
        self.grpc_status = grpc_status
        self.error = error

    @property
    def configured(self) -> bool:
        """The configuration's own answer (fault abort, direct response, redirect): a
        response in every ``local_replies`` mode."""
        return self.reason in _CONFIGURED

    @property
    def message(self) -> str:
        """A one-line description (exception text, gRPC details)."""
        if self.error is not None:
            return str(self.error)
        text = self.body.decode("utf-8", "replace") or self.reason.replace("_", " ")
        return f"{self.cluster}: {text}" if self.cluster else text

    def __repr__(self) -> str:
        return (
            f"LocalReply({self.status}, {self.body!r}, flag={self.flag!r}, "
            f"cluster={self.cluster!r})"
        )


def for_error(error: MeshError) -> LocalReply:
    """The reply for a decision the engine raised (route, admission, pick, deadline)."""
    cluster = error.cluster
    if isinstance(error, CircuitBreakerOpen):
        return LocalReply(
            503,
            f"{_RESET_BEFORE} reset reason: overflow".encode(),
            "UO",
            "overflow",
            cluster=cluster,
            headers=(*_TEXT, ("x-envoy-overloaded", "true")),
            error=error,
        )
    if isinstance(error, RequestDropped):
        if error.unconditional:
            body, flag, header = (
                b"unconditional drop overload",
                "UDO",
                "x-envoy-unconditional-drop-overload",
            )
        else:
            body, flag, header = b"drop overload", "DO", "x-envoy-drop-overload"
        return LocalReply(
            503, body, flag, "drop_overload", cluster=cluster,
            headers=(*_TEXT, (header, "true")), error=error,
        )  # fmt: skip
    if isinstance(error, UpstreamTimeout):
        return _timeout(cluster, error)
    if isinstance(error, NoHealthyUpstream):
        return LocalReply(
            503, b"no healthy upstream", "UH", "no_healthy_upstream", cluster=cluster, error=error
        )
    if isinstance(error, RouteNotFound | TargetNotResolved) or error.reason == "no_route":
        return LocalReply(
            404, b"", "NR", error.reason or "no_route", cluster=cluster,
            grpc_status=UNIMPLEMENTED, error=error,
        )  # fmt: skip
    # anything else the engine refuses (a cluster's TLS settings it cannot meet...):
    # Envoy cannot connect either
    return LocalReply(
        503,
        f"{_RESET_BEFORE} reset reason: connection failure".encode(),
        "UF",
        error.reason,
        cluster=cluster,
        error=error,
    )


def _timeout(cluster: str, error: MeshError | None = None, flag: str = "UT") -> LocalReply:
    return LocalReply(
        504,
        b"upstream request timeout",
        flag,
        "upstream_request_timeout",
        cluster=cluster,
        grpc_status=DEADLINE_EXCEEDED,
        error=error,
    )


_RESET_REASON = {
    OutcomeKind.CONNECT_FAILURE: ("UF", "remote connection failure", "connect_failure"),
    OutcomeKind.RESET: ("UC", "connection termination", "reset"),
}


def for_failure(outcome: Outcome, cluster: str, *, retried: bool) -> LocalReply | None:
    """The reply when the call's last attempt failed without a response: a timeout
    (504 UT), a connect failure (503 UF) or a reset (503 UC, or UR for an HTTP/2
    REFUSED_STREAM); ``retried``: retries ran out (Envoy adds URX and says so in the
    body). None for an outcome that is not such a failure."""
    kind = outcome.kind
    if kind is OutcomeKind.TIMEOUT:
        return _timeout(cluster, flag="URX,UT" if retried else "UT")
    found = _RESET_REASON.get(kind)
    if found is None:
        return None
    flag, why, reason = found
    if outcome.refused:
        flag, why = "UR", "remote refused stream reset"
    if retried:
        flag, text = f"URX,{flag}", f"{_RESET_BEFORE} retried and the latest reset reason: {why}"
    else:
        text = f"{_RESET_BEFORE} reset reason: {why}"
    return LocalReply(503, text.encode(), flag, reason, cluster=cluster)


def fault_abort(
    cluster: str, http_status: int | None, grpc_status: int | None, *, delayed: bool = False
) -> LocalReply:
    """The fault filter's abort: the configured status (HTTP, or a gRPC status sent as
    HTTP 200 with ``grpc-status``), body ``fault filter abort``, flag FI (``DI,FI``
    after an injected delay)."""
    flag = "DI,FI" if delayed else "FI"
    if http_status is not None:
        return LocalReply(
            http_status, b"fault filter abort", flag, "fault_abort", cluster=cluster,
            grpc_status=GRPC_FOR_HTTP.get(http_status, 2),
        )  # fmt: skip
    code = UNAVAILABLE if grpc_status is None else grpc_status
    headers = (
        ("content-type", "application/grpc"),
        ("grpc-status", str(code)),
        ("grpc-message", "fault filter abort"),
    )
    return LocalReply(
        200, b"", flag, "fault_abort", cluster=cluster, headers=headers, grpc_status=code
    )


def rbac_denied() -> LocalReply:
    """An inbound request an authorization policy denies: 403 ``RBAC: access denied``."""
    return LocalReply(
        403, b"RBAC: access denied", "RBAC", "rbac_denied", grpc_status=PERMISSION_DENIED
    )


def direct_response(
    status: int,
    body: bytes,
    headers: tuple[tuple[str, str], ...] = (),
    *,
    location: str | None = None,
) -> LocalReply:
    """A route's ``direct_response``: its status and body (``content-type: text/plain``
    when there is a body), ``headers`` (the route's response header mutations);
    ``location`` (the request's URL) for a 201 or 3xx status, as Envoy adds it."""
    head = (*_TEXT, *headers)
    if location is not None and (status == 201 or 300 <= status < 400):
        head = (("location", location), *head)
    return LocalReply(
        status, body, "-", "direct_response", headers=head,
        grpc_status=GRPC_FOR_HTTP.get(status, 2),
    )  # fmt: skip


def redirect(status: int, location: str, headers: tuple[tuple[str, str], ...] = ()) -> LocalReply:
    """A route's ``redirect``: ``status`` (301, 302, 303, 307 or 308), no body, the
    ``location`` and ``headers`` (the route's response header mutations)."""
    return LocalReply(
        status, b"", "-", "redirect", headers=(("location", location), *headers),
        grpc_status=2,
    )  # fmt: skip


def rate_limited(
    status: int = 429,
    headers: tuple[tuple[str, str], ...] = (),
    *,
    resource_exhausted: bool = False,
) -> LocalReply:
    """The local rate limit filter's answer: ``status`` (429 by default), body
    ``local_rate_limited``, the filter's ``response_headers_to_add``, flag RL; gRPC
    callers get UNAVAILABLE (RESOURCE_EXHAUSTED with ``rate_limited_as_resource_exhausted``)."""
    grpc = RESOURCE_EXHAUSTED if resource_exhausted else GRPC_FOR_HTTP.get(status, 2)
    return LocalReply(
        status, b"local_rate_limited", "RL", "rate_limited", headers=(*_TEXT, *headers),
        grpc_status=grpc,
    )  # fmt: skip
