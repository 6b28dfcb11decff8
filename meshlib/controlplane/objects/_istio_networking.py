"""Istio ``networking.istio.io`` VirtualService and DestinationRule: validated models.

Only the mesh-internal HTTP part of each API is modelled (no gateways, TCP or TLS
routes); every field the translation uses is checked here, and an error names the path
as written in the object (``spec.http[0].route[1].weight``).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import re2

from ._fields import (
    FieldError,
    as_bool,
    as_duration,
    as_int,
    as_labels,
    as_list,
    as_mapping,
    as_percent,
    as_port,
    as_str,
    as_str_list,
    metadata,
    wrap,
)

__all__ = [
    "GRPC_CODES",
    "Destination",
    "DirectResponse",
    "Fault",
    "HeaderOps",
    "HttpMatch",
    "HttpRoute",
    "Mirror",
    "Redirect",
    "Retries",
    "RouteDestination",
    "StringMatch",
    "VirtualService",
    "parse_virtual_service",
]


@dataclass(frozen=True)
class StringMatch:
    """Istio ``StringMatch``: ``kind`` is ``exact``, ``prefix`` or ``regex``."""

    kind: str
    value: str


@dataclass(frozen=True)
class HttpMatch:
    """One ``HTTPMatchRequest``; all its conditions must hold."""

    name: str = ""
    uri: StringMatch | None = None
    headers: Mapping[str, StringMatch] = field(default_factory=dict)
    query_params: Mapping[str, StringMatch] = field(default_factory=dict)
    method: StringMatch | None = None
    authority: StringMatch | None = None
    ignore_uri_case: bool = False
    port: int | None = None
    source_labels: Mapping[str, str] = field(default_factory=dict)
    source_namespace: str | None = None
    gateways: tuple[str, ...] = ()

    @property
    def per_caller(self) -> bool:
        """True when whether it applies depends on the calling workload."""
        return bool(self.source_labels) or self.source_namespace is not None

    def applies_to(self, namespace: str, labels: Mapping[str, str]) -> bool:
        """Whether a caller in ``namespace`` with ``labels`` sees this match (as istiod
        builds each proxy's routes): its sourceLabels and sourceNamespace hold, and its
        gateways (if any) include ``mesh``."""
        if self.gateways and "mesh" not in self.gateways:
            return False
        if self.source_namespace is not None and self.source_namespace != namespace:
            return False
        return all(labels.get(k) == v for k, v in self.source_labels.items())


@dataclass(frozen=True)
class Destination:
    """``host`` (possibly short), optional ``subset`` and port."""

    host: str
    subset: str = ""
    port: int | None = None


@dataclass(frozen=True)
class HeaderOps:
    """``headers.request`` or ``headers.response``: set, add, remove."""

    set: Mapping[str, str] = field(default_factory=dict)
    add: Mapping[str, str] = field(default_factory=dict)
    remove: tuple[str, ...] = ()


@dataclass(frozen=True)
class RouteDestination:
    """One weighted destination of a route."""

    destination: Destination
    weight: int | None = None
    request_headers: HeaderOps = HeaderOps()
    response_headers: HeaderOps = HeaderOps()


@dataclass(frozen=True)
class Retries:
    """``HTTPRetry``."""

    attempts: int
    per_try_timeout: float | None = None
    retry_on: str | None = None
    retry_remote_localities: bool = False
    retry_ignore_previous_hosts: bool = True
    backoff: float | None = None


@dataclass(frozen=True)
class Fault:
    """``HTTPFaultInjection``: a fixed delay and/or an abort, each with a percentage."""

    delay: float | None = None
    delay_percent: float = 100.0
    abort_http_status: int | None = None
    abort_grpc_status: str | None = None
    abort_percent: float = 100.0


@dataclass(frozen=True)
class Mirror:
    """One ``mirrors[]`` entry (or the ``mirror`` field): a copy of ``percent`` of calls."""

    destination: Destination
    percent: float = 100.0
    path: str = "mirror"  # where it was written, relative to the rule


@dataclass(frozen=True)
class Redirect:
    """``HTTPRedirect``: the route answers with a redirect instead of forwarding."""

    uri: str | None = None
    authority: str | None = None
    port: int | None = None
    scheme: str | None = None
    code: int = 301


@dataclass(frozen=True)
class DirectResponse:
    """``HTTPDirectResponse``: the route answers ``status`` and ``body`` itself."""

    status: int
    body: bytes = b""


#: The largest directResponse body: Envoy's default max_direct_response_body_size_bytes.
MAX_DIRECT_BODY = 4096


@dataclass(frozen=True)
class HttpRoute:
    """One ``spec.http[]`` rule."""

    name: str = ""
    match: tuple[HttpMatch, ...] = ()
    route: tuple[RouteDestination, ...] = ()
    rewrite_uri: str | None = None
    rewrite_authority: str | None = None
    timeout: float | None = None
    retries: Retries | None = None
    fault: Fault | None = None
    mirrors: tuple[Mirror, ...] = ()
    redirect: Redirect | None = None
    direct_response: DirectResponse | None = None
    regex_rewrite: tuple[str, str] | None = None  # (match, rewrite) of uriRegexRewrite
    request_headers: HeaderOps = HeaderOps()
    response_headers: HeaderOps = HeaderOps()


@dataclass(frozen=True)
class VirtualService:
    """A ``networking.istio.io/VirtualService`` (mesh HTTP routes)."""

    name: str
    namespace: str
    hosts: tuple[str, ...]
    http: tuple[HttpRoute, ...] = ()
    gateways: tuple[str, ...] = ()

    @property
    def applies_to_mesh(self) -> bool:
        """True when the rules are for sidecars/proxyless clients (gateway ``mesh``)."""
        return not self.gateways or "mesh" in self.gateways


GRPC_CODES: tuple[str, ...] = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)
_RETRY_ON = frozenset(
    {
        "5xx",
        "gateway-error",
        "reset",
        "connect-failure",
        "envoy-ratelimited",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "retriable-headers",
        "http3-post-connect-failure",
        "reset-before-request",
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    }
)


def _string_match(raw: Any, path: str) -> StringMatch:
    item = as_mapping(raw, path, required=True)
    kinds = [k for k in ("exact", "prefix", "regex") if k in item]
    if len(kinds) != 1:
        raise FieldError(path, "must set exactly one of exact, prefix, regex")
    kind = kinds[0]
    value = as_str(item[kind], f"{path}.{kind}", required=kind != "exact") or ""
    if kind == "regex":
        try:
            re2.compile(value)
        except re2.error as err:
            raise FieldError(f"{path}.regex", f"invalid RE2 regex {value!r}: {err}") from None
    return StringMatch(kind, value)


def _match_map(raw: Any, path: str) -> dict[str, StringMatch]:
    return {str(k): _string_match(v, f"{path}.{k}") for k, v in as_mapping(raw, path).items()}


def _match(raw: Any, path: str) -> HttpMatch:
    item = as_mapping(raw, path, required=True)
    headers = _match_map(item.get("headers"), f"{path}.headers")
    for key in headers:
        if key != key.lower():
            raise FieldError(f"{path}.headers.{key}", "header names must be lowercase")
    port = item.get("port")
    return HttpMatch(
        name=as_str(item.get("name"), f"{path}.name") or "",
        uri=None if item.get("uri") is None else _string_match(item["uri"], f"{path}.uri"),
        headers=headers,
        query_params=_match_map(item.get("queryParams"), f"{path}.queryParams"),
        method=None
        if item.get("method") is None
        else _string_match(item["method"], f"{path}.method"),
        authority=None
        if item.get("authority") is None
        else _string_match(item["authority"], f"{path}.authority"),
        ignore_uri_case=bool(as_bool(item.get("ignoreUriCase"), f"{path}.ignoreUriCase")),
        port=None if port is None else as_port(port, f"{path}.port"),
        source_labels=as_labels(item.get("sourceLabels"), f"{path}.sourceLabels"),
        source_namespace=as_str(item.get("sourceNamespace"), f"{path}.sourceNamespace"),
        gateways=as_str_list(item.get("gateways"), f"{path}.gateways"),
    )


def _destination(raw: Any, path: str) -> Destination:
    item = as_mapping(raw, path, required=True)
    port = as_mapping(item.get("port"), f"{path}.port")
    number = port.get("number")
    return Destination(
        host=str(as_str(item.get("host"), f"{path}.host", required=True)),
        subset=as_str(item.get("subset"), f"{path}.subset") or "",
        port=None if number is None else as_port(number, f"{path}.port.number"),
    )


def _header_ops(raw: Any, path: str) -> HeaderOps:
    item = as_mapping(raw, path)
    out: dict[str, dict[str, str]] = {}
    for key in ("set", "add"):
        values = as_mapping(item.get(key), f"{path}.{key}")
        out[key] = {str(k): str(as_str(v, f"{path}.{key}.{k}")) for k, v in values.items()}
    return HeaderOps(out["set"], out["add"], as_str_list(item.get("remove"), f"{path}.remove"))


def _headers(raw: Any, path: str) -> tuple[HeaderOps, HeaderOps]:
    item = as_mapping(raw, path)
    return (
        _header_ops(item.get("request"), f"{path}.request"),
        _header_ops(item.get("response"), f"{path}.response"),
    )


def _retries(raw: Any, path: str) -> Retries | None:
    if raw is None:
        return None
    item = as_mapping(raw, path)
    retry_on = as_str(item.get("retryOn"), f"{path}.retryOn")
    for part in (retry_on or "").split(","):
        part = part.strip()
        if part and part not in _RETRY_ON and not part.isdigit():
            raise FieldError(f"{path}.retryOn", f"unknown retry condition {part!r}")
    return Retries(
        attempts=as_int(item.get("attempts"), f"{path}.attempts") or 0,
        per_try_timeout=as_duration(
            item.get("perTryTimeout"), f"{path}.perTryTimeout", positive=True
        ),
        retry_on=retry_on,
        retry_remote_localities=bool(
            as_bool(item.get("retryRemoteLocalities"), f"{path}.retryRemoteLocalities")
        ),
        retry_ignore_previous_hosts=as_bool(
            item.get("retryIgnorePreviousHosts"), f"{path}.retryIgnorePreviousHosts"
        )
        is not False,
        backoff=as_duration(item.get("backoff"), f"{path}.backoff", positive=True),
    )


def _fault(raw: Any, path: str) -> Fault | None:
    if raw is None:
        return None
    item = as_mapping(raw, path)
    delay = as_mapping(item.get("delay"), f"{path}.delay")
    abort = as_mapping(item.get("abort"), f"{path}.abort")
    if not delay and not abort:
        raise FieldError(path, "must set delay or abort")
    fixed = None
    if delay:
        fixed = as_duration(delay.get("fixedDelay"), f"{path}.delay.fixedDelay", positive=True)
        if fixed is None:
            raise FieldError(f"{path}.delay.fixedDelay", "is required")
    http_status = grpc_status = None
    if abort:
        http_status = as_int(abort.get("httpStatus"), f"{path}.abort.httpStatus", minimum=200)
        grpc_status = as_str(abort.get("grpcStatus"), f"{path}.abort.grpcStatus")
        if (http_status is None) == (grpc_status is None):
            raise FieldError(f"{path}.abort", "must set exactly one of httpStatus, grpcStatus")
        if http_status is not None and http_status > 599:
            raise FieldError(f"{path}.abort.httpStatus", "must be an HTTP status 200-599")
        if grpc_status is not None and grpc_status not in GRPC_CODES:
            raise FieldError(f"{path}.abort.grpcStatus", f"unknown gRPC status {grpc_status!r}")
    delay_pct = as_percent(delay.get("percentage"), f"{path}.delay.percentage")
    if delay_pct is None and delay.get("percent") is not None:
        # The deprecated integer ``percent``: istiod reads it when ``percentage`` is unset.
        delay_pct = float(as_int(delay["percent"], f"{path}.delay.percent", maximum=100) or 0)
    abort_pct = as_percent(abort.get("percentage"), f"{path}.abort.percentage")
    return Fault(
        delay=fixed,
        delay_percent=100.0 if delay_pct is None else delay_pct,
        abort_http_status=http_status,
        abort_grpc_status=grpc_status,
        abort_percent=100.0 if abort_pct is None else abort_pct,
    )


def _http_route(raw: Any, path: str) -> HttpRoute:
    item = as_mapping(raw, path, required=True)
    matches = tuple(
        _match(m, f"{path}.match[{i}]")
        for i, m in enumerate(as_list(item.get("match"), f"{path}.match"))
    )
    dests: list[RouteDestination] = []
    for i, d in enumerate(as_list(item.get("route"), f"{path}.route")):
        dpath = f"{path}.route[{i}]"
        dmap = as_mapping(d, dpath, required=True)
        req, resp = _headers(dmap.get("headers"), f"{dpath}.headers")
        dests.append(
            RouteDestination(
                destination=_destination(dmap.get("destination"), f"{dpath}.destination"),
                weight=as_int(dmap.get("weight"), f"{dpath}.weight", maximum=100),
                request_headers=req,
                response_headers=resp,
            )
        )
    redirect = _redirect(item.get("redirect"), f"{path}.redirect")
    if redirect is not None and dests:
        raise FieldError(f"{path}.redirect", "cannot be set together with route")
    direct = _direct_response(item.get("directResponse"), f"{path}.directResponse")
    if direct is not None and (dests or redirect is not None):
        raise FieldError(f"{path}.directResponse", "cannot be set together with route or redirect")
    if not dests and redirect is None and direct is None:
        raise FieldError(f"{path}.route", "must list at least one destination")
    if len(dests) > 1 and sum(d.weight or 0 for d in dests) <= 0:
        raise FieldError(f"{path}.route", "weights must add up to more than 0")
    rewrite = as_mapping(item.get("rewrite"), f"{path}.rewrite")
    req, resp = _headers(item.get("headers"), f"{path}.headers")
    return HttpRoute(
        name=as_str(item.get("name"), f"{path}.name") or "",
        match=matches,
        route=tuple(dests),
        rewrite_uri=as_str(rewrite.get("uri"), f"{path}.rewrite.uri"),
        rewrite_authority=as_str(rewrite.get("authority"), f"{path}.rewrite.authority"),
        regex_rewrite=_regex_rewrite(rewrite, f"{path}.rewrite"),
        timeout=as_duration(item.get("timeout"), f"{path}.timeout"),
        retries=_retries(item.get("retries"), f"{path}.retries"),
        fault=_fault(item.get("fault"), f"{path}.fault"),
        mirrors=_mirrors(item, path),
        redirect=redirect,
        direct_response=direct,
        request_headers=req,
        response_headers=resp,
    )


_REDIRECT_CODES = (301, 302, 303, 307, 308)


def _redirect(raw: Any, path: str) -> Redirect | None:
    if raw is None:
        return None
    item = as_mapping(raw, path)
    port = item.get("port")
    code = as_int(item.get("redirectCode"), f"{path}.redirectCode")
    if code is not None and code not in _REDIRECT_CODES:
        codes = ", ".join(map(str, _REDIRECT_CODES))
        raise FieldError(f"{path}.redirectCode", f"{code} is not one of {codes}")
    return Redirect(
        uri=as_str(item.get("uri"), f"{path}.uri"),
        authority=as_str(item.get("authority"), f"{path}.authority"),
        port=None if port is None else as_port(port, f"{path}.port"),
        scheme=as_str(item.get("scheme"), f"{path}.scheme"),
        code=code or 301,
    )


def _direct_response(raw: Any, path: str) -> DirectResponse | None:
    if raw is None:
        return None
    item = as_mapping(raw, path)
    status = as_int(item.get("status"), f"{path}.status")
    if status is None or not 200 <= status <= 599:
        raise FieldError(f"{path}.status", f"must be in [200, 599], got {status}")
    body_map = as_mapping(item.get("body"), f"{path}.body")
    text = as_str(body_map.get("string"), f"{path}.body.string")
    encoded = as_str(body_map.get("bytes"), f"{path}.body.bytes")
    if text is not None and encoded is not None:
        raise FieldError(f"{path}.body", "string and bytes are exclusive")
    body = b""
    if text is not None:
        body = text.encode()
    elif encoded is not None:
        try:
            body = base64.b64decode(encoded, validate=True)
        except binascii.Error as exc:
            raise FieldError(f"{path}.body.bytes", f"not base64: {exc}") from None
    if len(body) > MAX_DIRECT_BODY:
        raise FieldError(
            f"{path}.body", f"{len(body)} bytes: meshlib serves at most {MAX_DIRECT_BODY}"
        )
    return DirectResponse(status, body)


def _regex_rewrite(rewrite: Mapping[str, Any], path: str) -> tuple[str, str] | None:
    raw = rewrite.get("uriRegexRewrite")
    if raw is None:
        return None
    rpath = f"{path}.uriRegexRewrite"
    if rewrite.get("uri") is not None:
        raise FieldError(rpath, "cannot be set together with rewrite.uri")
    item = as_mapping(raw, rpath)
    match = str(as_str(item.get("match"), f"{rpath}.match", required=True))
    try:
        re2.compile(match)
    except re2.error as err:
        raise FieldError(f"{rpath}.match", f"invalid RE2 regex {match!r}: {err}") from None
    return match, as_str(item.get("rewrite"), f"{rpath}.rewrite") or ""


def _mirrors(item: Mapping[str, Any], path: str) -> tuple[Mirror, ...]:
    """``mirrors[]``, or ``mirror`` with ``mirrorPercentage`` (or the deprecated integer
    ``mirrorPercent``/``mirror_percent``); each mirrors 100% unless a percentage is set."""
    many = as_list(item.get("mirrors"), f"{path}.mirrors")
    if many and item.get("mirror") is not None:
        raise FieldError(f"{path}.mirrors", "cannot be set together with mirror")
    out = []
    for i, raw in enumerate(many):
        mpath = f"{path}.mirrors[{i}]"
        entry = as_mapping(raw, mpath, required=True)
        pct = as_percent(entry.get("percentage"), f"{mpath}.percentage")
        out.append(
            Mirror(
                _destination(entry.get("destination"), f"{mpath}.destination"),
                100.0 if pct is None else pct,
                f"mirrors[{i}].destination",
            )
        )
    if item.get("mirror") is None:
        return tuple(out)
    pct = as_percent(item.get("mirrorPercentage"), f"{path}.mirrorPercentage")
    for legacy in ("mirrorPercent", "mirror_percent"):
        if pct is None and item.get(legacy) is not None:
            pct = float(as_int(item[legacy], f"{path}.{legacy}", maximum=100) or 0)
    mirror = _destination(item["mirror"], f"{path}.mirror")
    return (Mirror(mirror, 100.0 if pct is None else pct),)


def parse_virtual_service(doc: Mapping[str, Any]) -> VirtualService:
    """Validate one ``kind: VirtualService`` document."""
    try:
        name, namespace, _ = metadata(doc)
        spec = as_mapping(doc.get("spec"), "spec", required=True)
        for unsupported in ("tcp", "tls"):
            if spec.get(unsupported):
                raise FieldError(f"spec.{unsupported}", "is not supported (only spec.http)")
        http = tuple(
            _http_route(r, f"spec.http[{i}]")
            for i, r in enumerate(as_list(spec.get("http"), "spec.http"))
        )
        return VirtualService(
            name=name,
            namespace=namespace,
            hosts=as_str_list(spec.get("hosts"), "spec.hosts", required=True),
            http=http,
            gateways=as_str_list(spec.get("gateways"), "spec.gateways"),
        )
    except FieldError as err:
        raise wrap("VirtualService", doc, err) from None
