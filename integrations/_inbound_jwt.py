"""The server listener's ``jwt_authn`` filter, enforced in process.

:class:`JwtCheck` enforces the decoded filter with a
:class:`JwtAuthenticator` (PyJWT, ``meshlib[jwt]``): an invalid token is Envoy's 401
local reply with a ``www-authenticate: Bearer`` challenge (gRPC ``UNAUTHENTICATED``); a
missing one passes on when the filter allows it (istiod's ``allow_missing``), else is 401
``Jwt is missing``. A verified payload becomes the dynamic metadata RBAC matches
(``envoy.filters.http.jwt_authn`` / ``payload_in_metadata``), normalized as configured.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from meshlib.local_reply import LocalReply
from xds_client.resources._jwt_authn import JwtAuthnConfig

from ._inbound import InboundRequest

__all__ = ["JWT_METADATA", "JwtCheck", "JwtOutcome"]

JWT_METADATA = "envoy.filters.http.jwt_authn"
_UNAUTHENTICATED = 16
_PREFLIGHT = ("origin", "access-control-request-method")


@dataclass(frozen=True, slots=True)
class JwtOutcome:
    """``reply`` when the request is refused, else the result (None: no token) and the
    dynamic metadata it sets."""

    reply: LocalReply | None
    result: Any = None  # JwtResult
    metadata: Mapping[str, Any] | None = None


class JwtCheck:
    """One filter chain's ``jwt_authn`` filter."""

    def __init__(self, config: JwtAuthnConfig) -> None:
        from ._jwt import JwtAuthenticator  # needs PyJWT: meshlib[jwt]
        from ._jwt_rules import DEFAULT_SPACE_DELIMITED, JwtHeader, JwtRule

        self.allow_missing = config.allow_missing
        self._metadata_keys = {p.issuer: p.payload_in_metadata for p in config.providers}
        rules = [
            JwtRule(
                issuer=p.issuer,
                audiences=p.audiences,
                jwks_uri=p.jwks_uri,
                jwks=p.jwks,
                from_headers=tuple(JwtHeader(n, v) for n, v in p.from_headers),
                from_params=p.from_params,
                from_cookies=p.from_cookies,
                output_payload_to_header=p.forward_payload_header,
                output_claim_to_headers=p.claim_to_headers,
                forward_original_token=p.forward,
                timeout=p.timeout,
                space_delimited_claims=tuple(
                    sorted({*p.space_delimited_claims, *DEFAULT_SPACE_DELIMITED})
                ),
            )
            for p in config.providers
        ]
        self.authenticator = JwtAuthenticator(rules)
        # keys fetched off the request path, so the first request (often on an event
        # loop) rarely waits for them; a refresh every 5 minutes still fetches in line
        threading.Thread(
            target=self.authenticator.prefetch, name="meshlib-jwks-prefetch", daemon=True
        ).start()

    def check(self, request: InboundRequest) -> JwtOutcome:
        path, _, query = request.path.partition("?")
        result = self.authenticator.authenticate(request.method, request.headers, query)
        if result.status == "ok":
            key = self._metadata_keys.get(str(result.claims.get("iss")), "")
            meta = {JWT_METADATA: {key: dict(result.normalized_claims)}} if key else {}
            return JwtOutcome(None, result, meta)
        message = result.message if result.denied else "Jwt is missing"
        # CORS preflights bypass the filter (bypass_cors_preflight)
        preflight = request.method == "OPTIONS" and all(h in request.headers for h in _PREFLIGHT)
        if result.denied or not (self.allow_missing or preflight):
            host = request.headers.get("host") or request.host
            realm = f"{request.scheme}://{host}{path}"
            reply = LocalReply(
                401,
                message.encode(),
                "-",
                "jwt_authn_access_denied",
                headers=(
                    ("content-type", "text/plain"),
                    ("www-authenticate", f'Bearer realm="{realm}", error="invalid_token"'),
                ),
                grpc_status=_UNAUTHENTICATED,
            )
            return JwtOutcome(reply, result)
        return JwtOutcome(None, result, {})
