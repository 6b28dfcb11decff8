"""One document in, one validated model out: kind check, schema, supported fields, parser.

Every source (files, a live cluster, ``meshlib validate``) goes through
:func:`parse_object`, so an object is judged the same way wherever it comes from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ._fields import ConfigError, FieldError, object_id
from ._istio_authn import parse_request_authentication
from ._istio_mesh import (
    parse_authorization_policy,
    parse_peer_authentication,
    parse_service_entry,
    parse_sidecar,
    parse_workload_entry,
)
from ._istio_networking import parse_virtual_service
from ._istio_policy import parse_destination_rule
from ._kubernetes import parse_endpoint_slice, parse_endpoints, parse_pod, parse_service
from ._schema import check_kind, clean, schema_errors, spec_schema, unknown_top_level
from ._support import unsupported_fields

__all__ = ["PARSERS", "REFUSED_KINDS", "object_key", "parse_object"]

#: The parser of every kind the control plane reads.
PARSERS: Mapping[str, Callable[[Mapping[str, Any]], Any]] = {
    "Service": parse_service,
    "EndpointSlice": parse_endpoint_slice,
    "Endpoints": parse_endpoints,
    "Pod": parse_pod,
    "VirtualService": parse_virtual_service,
    "DestinationRule": parse_destination_rule,
    "ServiceEntry": parse_service_entry,
    "WorkloadEntry": parse_workload_entry,
    "PeerAuthentication": parse_peer_authentication,
    "AuthorizationPolicy": parse_authorization_policy,
    "RequestAuthentication": parse_request_authentication,
    "Sidecar": parse_sidecar,
}


#: Istio kinds that change what the mesh does but meshlib does not apply: refused, never
#: skipped (skipping them would let through what they would reject, or drop what they add).
REFUSED_KINDS: Mapping[str, str] = {
    "EnvoyFilter": "meshlib applies no Envoy config patches, so what it adds (a rate limit, "
    "a header, a Lua filter) would silently do nothing",
}
ISTIO_GROUPS = frozenset({"security.istio.io", "networking.istio.io"})


def object_key(doc: Mapping[str, Any]) -> str:
    """``"<Kind> <namespace>/<name>"``, the identity ``kubectl apply`` replaces by."""
    return f"{doc.get('kind')} {object_id(doc)}"


def _fail(kind: str, doc: Mapping[str, Any], errors: list[FieldError]) -> ConfigError:
    lines = tuple(f"{kind} {object_id(doc)}: {e}" for e in errors)
    return ConfigError("\n".join(lines), lines)


def parse_object(doc: Mapping[str, Any], *, schema: bool = True) -> Any:
    """The model of ``doc``, or None for a kind the mesh does not use.

    Raises :class:`ConfigError` with one problem per fault (``problems``): an unknown
    kind in a group the mesh reads, every schema violation (unknown fields with the key
    probably meant), every field meshlib does not support, else the parser's first error.
    ``schema=False`` skips the schema (the Kubernetes API server has applied it).
    """
    if not isinstance(doc.get("kind"), str):
        extra = unknown_top_level("", doc)
        raise _fail("<no kind>", doc, [FieldError("kind", "is required"), *extra])
    kind = str(doc.get("kind"))
    if schema:
        problem = check_kind(doc.get("apiVersion"), kind)
        if problem is not None:
            path, _, message = problem.partition(": ")
            extra = unknown_top_level(kind, doc) if path == "apiVersion" else []
            raise _fail(kind, doc, [FieldError(path, message), *extra])
    if kind in REFUSED_KINDS and str(doc.get("apiVersion", "")).split("/")[0] in ISTIO_GROUPS:
        why = REFUSED_KINDS[kind]
        raise _fail(kind, doc, [FieldError("kind", f"{kind} is not supported by meshlib: {why}")])
    parser = PARSERS.get(kind)
    if parser is None:
        return None
    doc = clean(doc)
    if schema:
        errors = schema_errors(doc)
        if errors:
            raise _fail(kind, doc, errors)
    api_version = doc.get("apiVersion")
    body = spec_schema(api_version, kind) if isinstance(api_version, str) else None
    refused = unsupported_fields(kind, doc, body)
    if refused:
        raise _fail(kind, doc, refused)
    return parser(doc)
