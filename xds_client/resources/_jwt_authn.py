"""Envoy's ``jwt_authn`` HTTP filter on a server listener, decoded to what an in-process
validator can honour: providers (issuer, audiences, inline or remote JWKS, token
locations, output headers, ``payload_in_metadata``) and one requirement for every path
(any of the providers, optionally ``allow_missing``), as istiod generates. Everything
else is refused with its field path, so the listener is NACKed rather than enforced
partly."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2

from ._base import ResourceError, unpack_nested

__all__ = ["JWT_AUTHN_TYPE", "JwtAuthnConfig", "JwtProviderConfig", "decode_jwt_authn"]

Fail = Callable[[str, str], ResourceError]
JWT_AUTHN_TYPE = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
_CLOCK_SKEW = 60  # Envoy's default, what meshlib's validator allows
_UNSUPPORTED_PROVIDER = (
    "subjects",
    "require_expiration",
    "max_lifetime",
    "pad_forward_payload_header",
    "header_in_metadata",
    "failed_status_in_metadata",
)


@dataclass(frozen=True, slots=True)
class JwtProviderConfig:
    """One ``providers[name]``; ``timeout`` of the JWKS fetch in seconds."""

    name: str
    issuer: str
    audiences: tuple[str, ...] = ()
    jwks: str = ""  # inline (local_jwks.inline_string)
    jwks_uri: str = ""  # remote_jwks.http_uri.uri
    timeout: float = 5.0
    forward: bool = False
    from_headers: tuple[tuple[str, str], ...] = ()  # (name, value_prefix)
    from_params: tuple[str, ...] = ()
    from_cookies: tuple[str, ...] = ()
    forward_payload_header: str = ""
    claim_to_headers: tuple[tuple[str, str], ...] = ()  # (header, claim)
    payload_in_metadata: str = ""
    space_delimited_claims: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class JwtAuthnConfig:
    """The filter: its providers in the requirement's order; ``allow_missing``: a request
    without any token passes on (unauthenticated)."""

    providers: tuple[JwtProviderConfig, ...]
    allow_missing: bool


def _provider(name: str, p: Any, path: str, fail: Fail) -> JwtProviderConfig:
    for field in _UNSUPPORTED_PROVIDER:
        if p.HasField(field) if field in ("subjects", "max_lifetime") else getattr(p, field):
            raise fail(f"{path}.{field}", "is not supported")
    if p.clock_skew_seconds not in (0, _CLOCK_SKEW):
        raise fail(f"{path}.clock_skew_seconds", f"only {_CLOCK_SKEW} is supported")
    if not p.issuer:
        raise fail(f"{path}.issuer", "must not be empty (meshlib needs the issuer)")
    jwks = uri = ""
    timeout = 5.0
    which = p.WhichOneof("jwks_source_specifier")
    if which == "local_jwks":
        if p.local_jwks.WhichOneof("specifier") != "inline_string":
            raise fail(f"{path}.local_jwks", "only inline_string is supported")
        jwks = p.local_jwks.inline_string
    elif which == "remote_jwks":
        r = p.remote_jwks
        for field in ("async_fetch", "retry_policy"):
            if r.HasField(field):
                raise fail(f"{path}.remote_jwks.{field}", "is not supported")
        uri = r.http_uri.uri
        if not uri.startswith(("http://", "https://")):
            raise fail(f"{path}.remote_jwks.http_uri.uri", f"{uri!r} is not an http(s) URL")
        if r.http_uri.HasField("timeout"):
            timeout = r.http_uri.timeout.seconds + r.http_uri.timeout.nanos / 1e9
            if timeout <= 0:
                raise fail(f"{path}.remote_jwks.http_uri.timeout", "must be positive")
    else:
        raise fail(f"{path}.jwks_source_specifier", "one of local_jwks or remote_jwks is required")
    return JwtProviderConfig(
        name=name,
        issuer=p.issuer,
        audiences=tuple(p.audiences),
        jwks=jwks,
        jwks_uri=uri,
        timeout=timeout,
        forward=p.forward,
        from_headers=tuple((h.name.lower(), h.value_prefix) for h in p.from_headers),
        from_params=tuple(p.from_params),
        from_cookies=tuple(p.from_cookies),
        forward_payload_header=p.forward_payload_header.lower(),
        claim_to_headers=tuple((c.header_name.lower(), c.claim_name) for c in p.claim_to_headers),
        payload_in_metadata=p.payload_in_metadata,
        space_delimited_claims=tuple(p.normalize_payload_in_metadata.space_delimited_claims),
    )


def _requirement(config: Any, path: str, fail: Fail) -> tuple[list[str], bool]:
    """(provider names, allow_missing) of the single rule for every path."""
    if config.filter_state_rules.name or config.requirement_map:
        raise fail(f"{path}.filter_state_rules", "only rules are supported")
    if len(config.rules) != 1:
        raise fail(f"{path}.rules", "exactly one rule (prefix '/') is supported")
    rule = config.rules[0]
    rpath = f"{path}.rules[0]"
    m = rule.match
    if (
        m.WhichOneof("path_specifier") != "prefix"
        or m.prefix != "/"
        or m.headers
        or (m.query_parameters or m.HasField("runtime_fraction") or m.HasField("grpc"))
    ):
        raise fail(f"{rpath}.match", "only prefix '/' is supported")
    req = rule.requires
    which = req.WhichOneof("requires_type")
    items = list(req.requires_any.requirements) if which == "requires_any" else [req]
    names: list[str] = []
    allow_missing = False
    for i, item in enumerate(items):
        kind = item.WhichOneof("requires_type")
        if kind == "provider_name":
            names.append(item.provider_name)
        elif kind == "allow_missing":
            allow_missing = True
        else:
            where = f"{rpath}.requires" + (
                f".requires_any.requirements[{i}]" if len(items) > 1 else ""
            )
            raise fail(f"{where}.{kind}", "is not supported")
    return names, allow_missing


def decode_jwt_authn(msg: Any, path: str, fail: Fail) -> JwtAuthnConfig:
    """Validate a ``JwtAuthentication`` filter config found at ``path``."""
    config = unpack_nested(
        msg, jwt_pb2.JwtAuthentication, fail(path, "cannot decode JwtAuthentication")
    )
    if not config.bypass_cors_preflight:
        raise fail(f"{path}.bypass_cors_preflight", "must be true (meshlib always bypasses)")
    names, allow_missing = _requirement(config, path, fail)
    providers = []
    issuers: set[str] = set()
    for name in names:
        if name not in config.providers:
            raise fail(f"{path}.rules[0].requires", f"provider {name!r} is not defined")
        provider = _provider(name, config.providers[name], f"{path}.providers[{name}]", fail)
        if provider.issuer in issuers:
            raise fail(f"{path}.providers[{name}].issuer", "duplicate issuer")
        issuers.add(provider.issuer)
        providers.append(provider)
    if not providers:
        raise fail(f"{path}.rules[0].requires", "names no provider")
    return JwtAuthnConfig(tuple(providers), allow_missing)
