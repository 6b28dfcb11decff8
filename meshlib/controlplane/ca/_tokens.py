"""Bootstrap tokens: how a workload that has no mesh certificate yet proves who it is.

Two kinds, as istiod accepts a Kubernetes service-account token for first issuance:

- :class:`KubernetesTokenReviewer` (``--kubernetes``): the caller's service-account token
  is sent to the API server's TokenReview (``authentication.k8s.io/v1``) with audience
  ``istio-ca``; an authenticated ``system:serviceaccount:NS:SA`` user is the identity
  ``spiffe://<trust domain>/ns/NS/sa/SA``.
- :class:`BootstrapTokens` (the embedded file mode): tokens the control plane issues itself.
  A token is ``mesh1.<payload>.<mac>``: ``payload`` is base64url JSON
  ``{"sub": SPIFFE ID, "aud": "istio-ca", "exp": unix seconds}`` and ``mac`` the base64url
  HMAC-SHA256 of ``mesh1.<payload>`` under a 32-byte key kept beside the CA's root as
  ``bootstrap-token-key`` (mode 0600, created on first use). Whoever can read the CA
  directory can mint tokens, exactly as whoever can read ``root-key.pem`` can mint
  certificates; a token is as secret as the key a workload gets with it.

Both raise :class:`AuthenticationError` with the reason a token is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from ._authority import CertificateAuthority, atomic_write

__all__ = [
    "CA_AUDIENCE",
    "TOKEN_KEY_FILE",
    "AuthenticationError",
    "BootstrapTokens",
    "KubernetesTokenReviewer",
    "TokenAuthenticator",
    "read_token",
]

log = logging.getLogger(__name__)

CA_AUDIENCE = "istio-ca"  # the audience istio-agent asks its projected token for
TOKEN_KEY_FILE = "bootstrap-token-key"
_PREFIX = "mesh1"
_SA_USER = "system:serviceaccount:"


class AuthenticationError(Exception):
    """A caller that could not be authenticated; the message says why."""


class TokenAuthenticator(Protocol):
    """Turns a bearer token into the SPIFFE ID it vouches for, or raises."""

    def authenticate(self, token: str) -> str:
        """The caller's SPIFFE ID; :class:`AuthenticationError` if the token is refused."""
        ...


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class BootstrapTokens:
    """Tokens this control plane issues and checks (HMAC-SHA256, see the module doc)."""

    def __init__(self, ca: CertificateAuthority, *, key: bytes | None = None) -> None:
        self.ca = ca
        self._key = key if key is not None else self._load_key(ca.directory / TOKEN_KEY_FILE)

    @staticmethod
    def _load_key(path: Path) -> bytes:
        if path.exists():
            key = path.read_bytes()
            if len(key) < 32:
                raise AuthenticationError(f"{path}: a token key must hold at least 32 bytes")
            return key
        key = secrets.token_bytes(32)
        atomic_write(path, key, 0o600)
        return key

    def _mac(self, signed: str) -> str:
        return _b64(hmac.new(self._key, signed.encode(), hashlib.sha256).digest())

    def issue(self, spiffe_id: str, ttl: float = 3600.0) -> str:
        """A token for ``spiffe_id`` valid for ``ttl`` seconds."""
        self.ca.check_spiffe_id(spiffe_id)
        claims = {"sub": spiffe_id, "aud": CA_AUDIENCE, "exp": int(time.time() + ttl)}
        payload = _b64(json.dumps(claims, sort_keys=True).encode())
        signed = f"{_PREFIX}.{payload}"
        return f"{signed}.{self._mac(signed)}"

    def authenticate(self, token: str) -> str:
        """The SPIFFE ID ``token`` was issued for, if its MAC, audience and expiry hold."""
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != _PREFIX:
            raise AuthenticationError("token: not a meshlib bootstrap token")
        signed = f"{parts[0]}.{parts[1]}"
        if not hmac.compare_digest(self._mac(signed), parts[2]):
            raise AuthenticationError("token: signature does not match")
        try:
            claims = json.loads(_unb64(parts[1]))
        except (ValueError, binascii.Error):
            raise AuthenticationError("token: payload is not base64url JSON") from None
        if not isinstance(claims, dict):
            raise AuthenticationError("token: payload is not a JSON object")
        if claims.get("aud") != CA_AUDIENCE:
            raise AuthenticationError(f"token: audience {claims.get('aud')!r} is not istio-ca")
        exp = claims.get("exp")
        if not isinstance(exp, int) or exp <= time.time():
            raise AuthenticationError("token: expired")
        sub = claims.get("sub")
        if not isinstance(sub, str):
            raise AuthenticationError("token: no subject")
        return self.ca.check_spiffe_id(sub)


class KubernetesTokenReviewer:
    """Checks service-account tokens with the API server's TokenReview.

    ``api_client`` is a ``kubernetes.client.ApiClient`` (see ``make_api_client``) whose
    credentials may create TokenReviews, as istiod's may.
    """

    def __init__(
        self,
        api_client: Any,
        *,
        trust_domain: str = "cluster.local",
        audiences: tuple[str, ...] = (CA_AUDIENCE,),
    ) -> None:
        self.api_client = api_client
        self.trust_domain = trust_domain
        self.audiences = audiences

    def review(self, token: str) -> Mapping[str, Any]:
        """The TokenReview ``status`` the API server answers for ``token``."""
        body: Any = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": list(self.audiences)},
        }
        try:
            from kubernetes import client

            review = client.AuthenticationV1Api(self.api_client).create_token_review(
                body, _request_timeout=10
            )
            answer = self.api_client.sanitize_for_serialization(review)
        except Exception as err:  # the client raises ApiException, urllib3 errors...
            raise AuthenticationError(f"token: TokenReview failed: {err}") from None
        status = answer.get("status") if isinstance(answer, dict) else None
        return status if isinstance(status, dict) else {}

    def authenticate(self, token: str) -> str:
        """``spiffe://<trust domain>/ns/NS/sa/SA`` of an authenticated service account."""
        status = self.review(token)
        if not status.get("authenticated"):
            raise AuthenticationError(
                f"token: not authenticated by the API server: {status.get('error', 'no reason')}"
            )
        granted = status.get("audiences")
        if granted is not None and not set(granted) & set(self.audiences):
            raise AuthenticationError(f"token: audiences {granted} do not include istio-ca")
        username = str((status.get("user") or {}).get("username", ""))
        if not username.startswith(_SA_USER) or username.count(":") != 3:
            raise AuthenticationError(f"token: {username!r} is not a service account")
        namespace, account = username[len(_SA_USER) :].split(":")
        return f"spiffe://{self.trust_domain}/ns/{namespace}/sa/{account}"


def read_token(path: str | os.PathLike[str]) -> str:
    """A token file's content, without surrounding whitespace."""
    return Path(path).read_text().strip()
