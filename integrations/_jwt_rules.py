"""Istio's RequestAuthentication ``jwtRules[]`` as typed rules (security.istio.io v1).

:meth:`JwtRule.from_istio` reads one rule as written in YAML (camelCase), refusing unknown
keys with the near miss and wrong types with the path, so a rule can be taken verbatim from
an Istio object.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from xds_client._bootstrap_reader import near_miss

__all__ = ["DEFAULT_SPACE_DELIMITED", "JwtConfigError", "JwtHeader", "JwtRule"]

#: Claims whose space-separated string values Istio also matches as lists.
DEFAULT_SPACE_DELIMITED = ("permission", "scope")
_KEYS = (
    "issuer",
    "audiences",
    "jwksUri",
    "jwks",
    "fromHeaders",
    "fromParams",
    "fromCookies",
    "outputPayloadToHeader",
    "outputClaimToHeaders",
    "forwardOriginalToken",
    "timeout",
    "spaceDelimitedClaims",
)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_HEADER = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class JwtConfigError(ValueError):
    """A JWT rule is invalid; the message names the field path."""


@dataclass(frozen=True, slots=True)
class JwtHeader:
    """A header carrying the token, with an optional value prefix (``"Bearer "``)."""

    name: str
    prefix: str = ""


@dataclass(frozen=True, slots=True)
class JwtRule:
    """One issuer's rule, with Istio's defaults.

    Tokens come from ``from_headers``/``from_params``/``from_cookies``; when all are empty,
    from ``Authorization: Bearer <token>`` then the ``access_token`` query parameter.
    Keys come from ``jwks`` (inline JSON), else ``jwks_uri``, else the issuer's OpenID
    discovery document. ``audiences`` empty: the ``aud`` claim is not checked.
    """

    issuer: str
    audiences: tuple[str, ...] = ()
    jwks_uri: str = ""
    jwks: str = ""
    from_headers: tuple[JwtHeader, ...] = ()
    from_params: tuple[str, ...] = ()
    from_cookies: tuple[str, ...] = ()
    output_payload_to_header: str = ""
    output_claim_to_headers: tuple[tuple[str, str], ...] = ()  # (header, claim)
    forward_original_token: bool = False
    timeout: float = 5.0  # JWKS fetch timeout, seconds (Istio's default)
    space_delimited_claims: tuple[str, ...] = field(default=DEFAULT_SPACE_DELIMITED)

    def __post_init__(self) -> None:
        if not self.issuer:
            raise JwtConfigError("issuer: is required")
        if self.jwks_uri and urlsplit(self.jwks_uri).scheme not in ("http", "https"):
            raise JwtConfigError(f"jwksUri: {self.jwks_uri!r} is not an http(s) URL")
        headers = [h.name for h in self.from_headers] + [h for h, _ in self.output_claim_to_headers]
        if self.output_payload_to_header:
            headers.append(self.output_payload_to_header)
        for name in headers:
            if not _HEADER.match(name):
                raise JwtConfigError(f"{name!r} is not a valid header name")
        if not 0 < self.timeout <= 3600:
            raise JwtConfigError(f"timeout: must be within (0, 3600] s, got {self.timeout}")

    @property
    def locations(self) -> tuple[tuple[JwtHeader, ...], tuple[str, ...], tuple[str, ...]]:
        """(headers, params, cookies) to read, Istio's defaults when none is set."""
        if self.from_headers or self.from_params or self.from_cookies:
            return self.from_headers, self.from_params, self.from_cookies
        return (JwtHeader("authorization", "Bearer "),), ("access_token",), ()

    @classmethod
    def from_istio(cls, spec: Mapping[str, Any], path: str = "jwtRules[0]") -> JwtRule:
        """A rule from RequestAuthentication ``spec.jwtRules[i]`` (YAML, camelCase)."""
        if not isinstance(spec, Mapping):
            raise JwtConfigError(f"{path}: must be an object")
        for key in spec:
            if key not in _KEYS:
                raise JwtConfigError(f"{path}.{key}: unknown field{near_miss(key, _KEYS)}")

        def text(key: str) -> str:
            value = spec.get(key, "")
            if not isinstance(value, str):
                raise JwtConfigError(f"{path}.{key}: must be a string")
            return value

        def strings(key: str) -> tuple[str, ...]:
            value = spec.get(key, [])
            if not isinstance(value, Sequence) or isinstance(value, str):
                raise JwtConfigError(f"{path}.{key}: must be a list of strings")
            if not all(isinstance(v, str) and v for v in value):
                raise JwtConfigError(f"{path}.{key}: must be a list of non-empty strings")
            return tuple(value)

        def pairs(key: str, fields: tuple[str, str]) -> list[tuple[str, str]]:
            out = []
            for i, item in enumerate(spec.get(key, [])):
                where = f"{path}.{key}[{i}]"
                if not isinstance(item, Mapping):
                    raise JwtConfigError(f"{where}: must be an object")
                for k in item:
                    if k not in fields:
                        raise JwtConfigError(f"{where}.{k}: unknown field{near_miss(k, fields)}")
                first, second = (item.get(f, "") for f in fields)
                if not isinstance(first, str) or not first or not isinstance(second, str):
                    raise JwtConfigError(f"{where}: {fields[0]} must be a non-empty string")
                out.append((first, second))
            return out

        forward = spec.get("forwardOriginalToken", False)
        if not isinstance(forward, bool):
            raise JwtConfigError(f"{path}.forwardOriginalToken: must be a boolean")
        timeout = 5.0
        if "timeout" in spec:
            match = _DURATION.match(str(spec["timeout"]))
            if match is None:
                raise JwtConfigError(f"{path}.timeout: {spec['timeout']!r} is not a duration")
            timeout = float(match.group(1)) * _UNITS[match.group(2)]
        try:
            return cls(
                issuer=text("issuer"),
                audiences=strings("audiences"),
                jwks_uri=text("jwksUri"),
                jwks=text("jwks"),
                from_headers=tuple(
                    JwtHeader(n.lower(), p) for n, p in pairs("fromHeaders", ("name", "prefix"))
                ),
                from_params=strings("fromParams"),
                from_cookies=strings("fromCookies"),
                output_payload_to_header=text("outputPayloadToHeader").lower(),
                output_claim_to_headers=tuple(
                    (h.lower(), c) for h, c in pairs("outputClaimToHeaders", ("header", "claim"))
                ),
                forward_original_token=forward,
                timeout=timeout,
                space_delimited_claims=tuple(
                    sorted({*strings("spaceDelimitedClaims"), *DEFAULT_SPACE_DELIMITED})
                ),
            )
        except JwtConfigError as exc:
            raise JwtConfigError(f"{path}.{exc}") from None
