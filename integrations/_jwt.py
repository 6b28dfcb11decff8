"""JWT validation with Istio's RequestAuthentication semantics, on PyJWT.

For every rule the token (if any) is read from the rule's locations and verified against
the issuer's keys: signature, ``iss``, ``aud`` (when the rule lists audiences), ``exp``
and ``nbf`` with 60 s of clock skew (Envoy's default). As istiod configures Envoy's
``jwt_authn``, a request passes when some rule accepts its token, or when no rule finds an
invalid one: a missing token passes (to authorization, with no principal); a present but
invalid token, for any rule that sees it, fails with 401 unless another rule accepts it.

Keys: inline ``jwks``, else ``jwks_uri``, else the issuer's OpenID discovery document.
Fetched keys are cached for 5 minutes (Istio's remote JWKS cache duration); a token whose
``kid`` the cache lacks triggers one refetch (at most every ``min_refetch`` seconds), so a
rotated key works as soon as the JWKS serves it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
from jwt import PyJWK, PyJWKSet

from ._jwt_rules import JwtHeader, JwtRule

__all__ = ["JwksCache", "JwtAuthenticator", "JwtResult", "NeedsFetch"]

CACHE_SECONDS = 300.0
CLOCK_SKEW = 60
_ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
    "ES256", "ES384", "ES512", "EdDSA", "HS256", "HS384", "HS512",
)  # fmt: skip


class _Failure(Exception):
    """Why a present token is refused (Envoy's wording)."""


class NeedsFetch(Exception):
    """``authenticate(fetch=False)`` would have to fetch keys: call it again off the
    event loop with ``fetch=True``."""


@dataclass(frozen=True, slots=True)
class JwtResult:
    """The outcome for one request: ``status`` is ``"ok"``, ``"missing"`` or ``"invalid"``.

    ``principal`` is Istio's ``request.auth.principal`` (``iss/sub``); ``claims`` the
    verified payload (space-delimited claims such as ``scope`` also split into lists in
    ``normalized_claims``). ``set_headers``/``remove_headers`` (lower-case names) are
    what the application should see changed: payload and claim headers set, the token's
    header removed unless ``forwardOriginalToken``.
    """

    status: str
    message: str = ""
    principal: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)
    normalized_claims: Mapping[str, Any] = field(default_factory=dict)
    set_headers: Mapping[str, str] = field(default_factory=dict)
    remove_headers: frozenset[str] = frozenset()

    @property
    def denied(self) -> bool:
        return self.status == "invalid"


class JwksCache:
    """The keys of one rule: inline, or fetched (with ``httpx``) and cached."""

    def __init__(self, rule: JwtRule, *, min_refetch: float = 5.0) -> None:
        self.rule = rule
        self.min_refetch = min_refetch
        self._lock = threading.Lock()
        self._keys: list[PyJWK] = []
        self._fetched = -1.0e9
        self._refetched = -1.0e9
        if rule.jwks:
            self._keys = _parse_jwks(rule.jwks)

    def keys(self, kid: str | None, *, fetch: bool = True) -> list[PyJWK]:
        """Keys that may have signed a token with ``kid`` (all if it has none).
        ``fetch=False``: raise NeedsFetch instead of fetching."""
        if self.rule.jwks:
            return _matching(self._keys, kid)
        with self._lock:
            now = time.monotonic()
            if now - self._fetched >= CACHE_SECONDS:
                if not fetch:
                    raise NeedsFetch
                self._fetch(now)
            found = _matching(self._keys, kid)
            if not found and kid is not None and now - self._refetched >= self.min_refetch:
                if not fetch:
                    raise NeedsFetch
                self._refetched = now
                self._fetch(now)
                found = _matching(self._keys, kid)
            return found

    def _fetch(self, now: float) -> None:
        uri = self.rule.jwks_uri
        try:
            with httpx.Client(timeout=self.rule.timeout) as client:
                if not uri:
                    discovery = self.rule.issuer.rstrip("/") + "/.well-known/openid-configuration"
                    uri = str(_get_json(client, discovery)["jwks_uri"])
                self._keys = _parse_jwks(json.dumps(_get_json(client, uri)))
            self._fetched = now
        except (httpx.HTTPError, KeyError, TypeError, ValueError, _Failure) as exc:
            if not self._keys:  # keep serving the last good keys
                raise _Failure(f"Jwks remote fetch is failed ({exc})") from None


def _get_json(client: httpx.Client, uri: str) -> Any:
    response = client.get(uri)
    response.raise_for_status()
    return response.json()


def _parse_jwks(text: str) -> list[PyJWK]:
    try:
        data = json.loads(text)
        if isinstance(data, Mapping) and "keys" not in data:  # a single JWK
            return [PyJWK(dict(data))]
        return list(PyJWKSet.from_dict(dict(data)).keys)
    except (ValueError, TypeError, jwt.PyJWKError, jwt.PyJWKSetError) as exc:
        raise _Failure(f"Jwks is invalid ({exc})") from None


def _matching(keys: list[PyJWK], kid: str | None) -> list[PyJWK]:
    return [k for k in keys if kid is None or k.key_id is None or k.key_id == kid]


class JwtAuthenticator:
    """Validates the JWTs of a request against a RequestAuthentication's rules."""

    def __init__(self, rules: Sequence[JwtRule], *, min_refetch: float = 5.0) -> None:
        if not rules:
            raise ValueError("JwtAuthenticator: give at least one JwtRule")
        self.rules = tuple(rules)
        self._jwks = [JwksCache(rule, min_refetch=min_refetch) for rule in self.rules]
        self._output_headers = frozenset(
            name
            for rule in self.rules
            for name in (
                rule.output_payload_to_header,
                *(h for h, _ in rule.output_claim_to_headers),
            )
            if name
        )

    def prefetch(self) -> None:
        """Fetch every remote JWKS now (errors are left for the first request to report)."""
        for cache in self._jwks:
            with contextlib.suppress(_Failure):
                cache.keys(None)

    @property
    def header_names(self) -> frozenset[str]:
        """Headers a token may come in (``cookie`` included when a rule reads cookies)."""
        names: set[str] = set()
        for rule in self.rules:
            from_headers, _, from_cookies = rule.locations
            names.update(h.name for h in from_headers)
            if from_cookies:
                names.add("cookie")
        return frozenset(names)

    @property
    def output_headers(self) -> frozenset[str]:
        """Headers the authenticator sets: removed from every incoming request first, so a
        caller cannot forge them."""
        return self._output_headers

    def authenticate(
        self, method: str, headers: Mapping[str, str], query: str = "", *, fetch: bool = True
    ) -> JwtResult:
        """The result for a request (``headers`` with lower-case names). ``fetch=False``
        (for event loops): raise NeedsFetch rather than fetch keys over the network."""
        if (
            method == "OPTIONS"
            and "origin" in headers
            and ("access-control-request-method" in headers)
        ):
            return JwtResult("missing")  # CORS preflight bypasses, as istiod configures
        params = parse_qs(query, keep_blank_values=True) if query else {}
        failures: list[str] = []
        for rule, jwks in zip(self.rules, self._jwks, strict=True):
            found = _extract(rule, headers, params)
            if found is None:
                continue
            token, header_name = found
            try:
                claims = _verify(rule, jwks, token, fetch)
            except _Failure as exc:
                failures.append(str(exc))
                continue
            return _success(rule, token, claims, header_name, self._output_headers)
        if failures:
            return JwtResult("invalid", failures[0], remove_headers=self._output_headers)
        return JwtResult("missing", remove_headers=self._output_headers)


def _extract(
    rule: JwtRule, headers: Mapping[str, str], params: Mapping[str, list[str]]
) -> tuple[str, str | None] | None:
    """(token, the header it came from) from the rule's first location holding one."""
    from_headers, from_params, from_cookies = rule.locations
    for location in from_headers:
        token = _from_header(location, headers.get(location.name))
        if token:
            return token, location.name
    for name in from_params:
        values = params.get(name)
        if values and values[0]:
            return values[0], None
    if from_cookies and "cookie" in headers:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(headers["cookie"])
        except Exception:  # a malformed Cookie header holds no token
            return None
        for name in from_cookies:
            if name in jar and jar[name].value:
                return jar[name].value, None
    return None


def _from_header(location: JwtHeader, value: str | None) -> str | None:
    if not value:
        return None
    if location.prefix:
        if not value.startswith(location.prefix):
            return None
        value = value[len(location.prefix) :]
    return value.strip() or None


def _verify(rule: JwtRule, jwks: JwksCache, token: str, fetch: bool) -> dict[str, Any]:
    header, unverified = _peek(token)
    if unverified.get("iss") != rule.issuer:
        raise _Failure("Jwt issuer is not configured")
    alg = header.get("alg")
    if alg not in _ALGORITHMS:
        raise _Failure(f"Jwt algorithm {alg!r} is not supported")
    kid = header.get("kid")
    keys = [
        k for k in jwks.keys(kid if isinstance(kid, str) else None, fetch=fetch) if _fits(k, alg)
    ]
    if not keys:
        raise _Failure("Jwks doesn't have key to match kid or alg from Jwt")
    for key in keys:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=list(rule.audiences) or None,
                issuer=rule.issuer,
                leeway=CLOCK_SKEW,
                options={"verify_aud": bool(rule.audiences)},
            )
            return claims
        except jwt.InvalidSignatureError:
            continue  # another key with the same kid (or none) may have signed it
        except jwt.ExpiredSignatureError:
            raise _Failure("Jwt is expired") from None
        except jwt.ImmatureSignatureError:
            raise _Failure("Jwt not yet valid") from None
        except (jwt.InvalidAudienceError, jwt.MissingRequiredClaimError):
            raise _Failure("Audiences in Jwt are not allowed") from None
        except jwt.PyJWTError:
            raise _Failure("Jwt verification fails") from None
    raise _Failure("Jwt verification fails")


def _peek(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The unverified header and payload (PyJWT then verifies the token in one pass)."""
    parts = token.split(".")
    try:
        if len(parts) != 3:
            raise ValueError("not three segments")
        header, payload = (
            json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4))) for p in parts[:2]
        )
        if not isinstance(header, dict) or not isinstance(payload, dict):
            raise ValueError("not JSON objects")
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise _Failure("Jwt is not in the form of Header.Payload.Signature") from None
    return header, payload


_KTY = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP", "HS": "oct"}


def _fits(key: PyJWK, alg: str) -> bool:
    """The key's type suits the token's algorithm (no HMAC with a public RSA key)."""
    kty: str | None = key.key_type
    return kty is not None and kty == _KTY.get(alg[:2])


def _success(
    rule: JwtRule,
    token: str,
    claims: dict[str, Any],
    header_name: str | None,
    output_headers: frozenset[str],
) -> JwtResult:
    normalized = dict(claims)
    for name in rule.space_delimited_claims:
        value = claims.get(name)
        if isinstance(value, str):
            normalized[name] = value.split()
    set_headers: dict[str, str] = {}
    if rule.output_payload_to_header:
        set_headers[rule.output_payload_to_header] = token.split(".")[1]
    for header, claim in rule.output_claim_to_headers:
        value = claims.get(claim)
        if isinstance(value, bool):
            set_headers[header] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            set_headers[header] = str(value)
    remove = set(output_headers) - set(set_headers)
    if header_name is not None and not rule.forward_original_token:
        remove.add(header_name)
    sub = claims.get("sub")
    principal = f"{claims['iss']}/{sub}" if isinstance(sub, str) else None
    return JwtResult(
        "ok",
        principal=principal,
        claims=claims,
        normalized_claims=normalized,
        set_headers=set_headers,
        remove_headers=frozenset(remove),
    )
