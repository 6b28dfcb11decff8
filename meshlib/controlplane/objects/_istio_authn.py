"""Istio's RequestAuthentication (security.istio.io v1/v1beta1): end-user JWT rules.

A RequestAuthentication selects workloads (``spec.selector``; none: its whole namespace,
or the mesh from the root namespace) and lists ``jwtRules``: the issuers whose tokens the
workload's inbound side validates. ``targetRef``/``targetRefs`` (gateways, waypoints) are
refused: a proxyless workload is selected by labels.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ._fields import FieldError, as_labels, as_list, as_mapping, as_str, as_str_list, metadata, wrap

__all__ = ["JwtRuleSpec", "RequestAuthentication", "parse_request_authentication"]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_HEADER = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


@dataclass(frozen=True)
class JwtRuleSpec:
    """One ``spec.jwtRules[i]`` (header names lower-case, ``timeout`` in seconds)."""

    issuer: str
    audiences: tuple[str, ...] = ()
    jwks_uri: str = ""
    jwks: str = ""
    from_headers: tuple[tuple[str, str], ...] = ()  # (name, prefix)
    from_params: tuple[str, ...] = ()
    from_cookies: tuple[str, ...] = ()
    output_payload_to_header: str = ""
    output_claim_to_headers: tuple[tuple[str, str], ...] = ()  # (header, claim)
    forward_original_token: bool = False
    timeout: float = 5.0
    space_delimited_claims: tuple[str, ...] = ()


@dataclass(frozen=True)
class RequestAuthentication:
    name: str
    namespace: str
    rules: tuple[JwtRuleSpec, ...]
    selector: Mapping[str, str] | None = None


def _header(value: str, path: str) -> str:
    if not _HEADER.match(value):
        raise FieldError(path, f"{value!r} is not a valid header name")
    return value.lower()


def _rule(raw: Any, path: str) -> JwtRuleSpec:
    item = as_mapping(raw, path, required=True)
    issuer = as_str(item.get("issuer"), f"{path}.issuer", required=True) or ""
    jwks_uri = as_str(item.get("jwksUri") or item.get("jwks_uri"), f"{path}.jwksUri") or ""
    if jwks_uri and urlsplit(jwks_uri).scheme not in ("http", "https"):
        raise FieldError(f"{path}.jwksUri", f"{jwks_uri!r} is not an http(s) URL")
    jwks = as_str(item.get("jwks"), f"{path}.jwks") or ""
    if not jwks and not jwks_uri:
        # istiod would resolve the issuer's OpenID discovery document itself
        raise FieldError(f"{path}.jwksUri", "is required (or jwks): meshlib does no discovery")
    headers = []
    for i, h in enumerate(as_list(item.get("fromHeaders"), f"{path}.fromHeaders")):
        hpath = f"{path}.fromHeaders[{i}]"
        hm = as_mapping(h, hpath, required=True)
        name = _header(as_str(hm.get("name"), f"{hpath}.name", required=True) or "", hpath)
        headers.append((name, as_str(hm.get("prefix"), f"{hpath}.prefix") or ""))
    claims = []
    output_claims = as_list(item.get("outputClaimToHeaders"), f"{path}.outputClaimToHeaders")
    for i, c in enumerate(output_claims):
        cpath = f"{path}.outputClaimToHeaders[{i}]"
        cm = as_mapping(c, cpath, required=True)
        header = _header(as_str(cm.get("header"), f"{cpath}.header", required=True) or "", cpath)
        claims.append((header, as_str(cm.get("claim"), f"{cpath}.claim", required=True) or ""))
    payload = as_str(item.get("outputPayloadToHeader"), f"{path}.outputPayloadToHeader") or ""
    forward = item.get("forwardOriginalToken", False)
    if not isinstance(forward, bool):
        raise FieldError(f"{path}.forwardOriginalToken", "must be a boolean")
    timeout = 5.0
    if "timeout" in item:
        match = _DURATION.match(str(item["timeout"]))
        if match is None:
            raise FieldError(f"{path}.timeout", f"{item['timeout']!r} is not a duration")
        timeout = float(match.group(1)) * _UNITS[match.group(2)]
    return JwtRuleSpec(
        issuer=issuer,
        audiences=tuple(as_str_list(item.get("audiences"), f"{path}.audiences")),
        jwks_uri=jwks_uri,
        jwks=jwks,
        from_headers=tuple(headers),
        from_params=tuple(as_str_list(item.get("fromParams"), f"{path}.fromParams")),
        from_cookies=tuple(as_str_list(item.get("fromCookies"), f"{path}.fromCookies")),
        output_payload_to_header=_header(payload, f"{path}.outputPayloadToHeader")
        if payload
        else "",
        output_claim_to_headers=tuple(claims),
        forward_original_token=forward,
        timeout=timeout,
        space_delimited_claims=tuple(
            as_str_list(item.get("spaceDelimitedClaims"), f"{path}.spaceDelimitedClaims")
        ),
    )


def parse_request_authentication(doc: Mapping[str, Any]) -> RequestAuthentication:
    """Validate one ``kind: RequestAuthentication`` document."""
    try:
        name, namespace, _ = metadata(doc)
        spec = as_mapping(doc.get("spec"), "spec")
        raw_selector = spec.get("selector")
        selector = None
        if raw_selector is not None:
            selector = as_labels(
                as_mapping(raw_selector, "spec.selector").get("matchLabels"),
                "spec.selector.matchLabels",
            )
        rules = tuple(
            _rule(r, f"spec.jwtRules[{i}]")
            for i, r in enumerate(as_list(spec.get("jwtRules"), "spec.jwtRules"))
        )
        seen: set[str] = set()
        for i, rule in enumerate(rules):
            if rule.issuer in seen:
                raise FieldError(f"spec.jwtRules[{i}].issuer", f"duplicate issuer {rule.issuer!r}")
            seen.add(rule.issuer)
        return RequestAuthentication(name, namespace, rules, selector)
    except FieldError as err:
        raise wrap("RequestAuthentication", doc, err) from None
