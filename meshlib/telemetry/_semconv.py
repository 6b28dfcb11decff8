"""Attribute names and small translations shared by spans and metrics.

OpenTelemetry semantic conventions (HTTP and RPC client spans, stable HTTP names), the
mesh's own ``meshlib.*`` attributes, Istio's standard metric labels and Envoy's response
flags.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._outcome import Outcome, OutcomeKind

__all__ = [
    "GRPC_CODES",
    "Destination",
    "destination_of",
    "response_flags",
    "retry_reason",
]

# OpenTelemetry semantic conventions
HTTP_METHOD = "http.request.method"
HTTP_STATUS = "http.response.status_code"
HTTP_RESEND = "http.request.resend_count"
URL_FULL = "url.full"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
PEER_ADDRESS = "network.peer.address"
PEER_PORT = "network.peer.port"
ERROR_TYPE = "error.type"
RPC_SYSTEM = "rpc.system"
RPC_SERVICE = "rpc.service"
RPC_METHOD = "rpc.method"
RPC_GRPC_STATUS = "rpc.grpc.status_code"

# the mesh's own
MESH_ROUTE = "meshlib.route"
MESH_CLUSTER = "meshlib.cluster"
MESH_UPSTREAM = "meshlib.upstream.address"
MESH_LOCALITY = "meshlib.locality"
MESH_RETRY_COUNT = "meshlib.retry.count"
MESH_RETRY_REASON = "meshlib.retry.reason"
MESH_OUTCOME = "meshlib.outcome"
MESH_ATTEMPT = "meshlib.attempt"
MESH_RESPONSE_FLAGS = "meshlib.response_flags"  # Envoy's %RESPONSE_FLAGS% of the call

#: gRPC status code numbers to their canonical names.
GRPC_CODES: dict[int, str] = {
    0: "OK",
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}

# Envoy's response flags for what the mesh decided locally (Istio's ``response_flags``).
# The exchange core decides a call's flags (meshlib.local_reply) and hands them to
# CallRecord.end; these tables cover a call that ended with an error it did not decide
# (a resolve timeout, a driver's own failure).
_FLAGS_BY_REASON = {
    "overflow": "UO",
    "no_healthy_upstream": "UH",
    "upstream_request_timeout": "UT",
    "no_route": "NR",
    "resolve_timeout": "NR",
    "listener_error": "NR",
    "fault_abort": "FI",
    "drop_overload": "DO",
    "connect_failure": "UF",
    "reset": "UC",
    "closed": "UH",
}
_FLAGS_BY_KIND = {
    OutcomeKind.CONNECT_FAILURE: "UF",
    OutcomeKind.RESET: "UC",
    OutcomeKind.TIMEOUT: "UT",
}


def response_flags(reason: str = "", last: Outcome | None = None) -> str:
    """Envoy/Istio response flags for a call that ended with an error: from the mesh
    error's ``reason`` if any, else from the last attempt's outcome (an HTTP/2
    REFUSED_STREAM reset is ``UR``); ``-`` when nothing unusual happened."""
    if reason:
        return _FLAGS_BY_REASON.get(reason, "-")
    if last is not None:
        if last.refused:
            return "UR"
        return _FLAGS_BY_KIND.get(last.kind, "-")
    return "-"


def retry_reason(outcome: Outcome) -> str:
    """Why an attempt with this outcome was retried, in retry_on vocabulary: a gRPC
    status name (``unavailable``), ``5xx``/``4xx``, ``connect-failure``, ``reset`` or
    ``per-try-timeout``."""
    if outcome.kind is OutcomeKind.RESPONSE:
        if outcome.grpc_status:
            return (
                GRPC_CODES.get(outcome.grpc_status, str(outcome.grpc_status))
                .lower()
                .replace("_", "-")
            )
        status = outcome.status or 0
        return f"{status // 100}xx" if status >= 400 else str(status)
    if outcome.kind is OutcomeKind.TIMEOUT:
        return "per-try-timeout"
    return str(outcome.kind.value).replace("_", "-")


@dataclass(frozen=True, slots=True)
class Destination:
    """Istio's destination_service labels, read from an istiod-style cluster name."""

    service: str
    name: str
    namespace: str
    version: str


def destination_of(cluster: str, authority: str = "") -> Destination:
    """``outbound|9080|v1|reviews.default.svc.cluster.local`` -> service
    ``reviews.default.svc.cluster.local``, name ``reviews``, namespace ``default``,
    version ``v1``; other cluster names fall back to the authority's host."""
    parts = cluster.split("|")
    if len(parts) == 4 and parts[0] in ("outbound", "inbound"):
        fqdn, subset = parts[3], parts[2]
    else:
        fqdn = authority.rsplit(":", 1)[0] if authority else cluster
        subset = ""
    labels = fqdn.split(".")
    name = labels[0] if labels else "unknown"
    namespace = labels[1] if len(labels) > 2 and labels[2] == "svc" else "unknown"
    return Destination(fqdn or "unknown", name or "unknown", namespace, subset or "unknown")
