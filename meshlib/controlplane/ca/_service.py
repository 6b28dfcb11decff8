"""The CSR signing service and caller authentication, served on the control plane's gRPC
server beside ADS.

The service is istiod's ``istio.v1.auth.IstioCertificateService/CreateCertificate`` in
its wire shape: the request is ``IstioCertificateRequest {string csr = 1; int64
validity_duration = 3; google.protobuf.Struct metadata = 4}`` and the answer
``IstioCertificateResponse {repeated string cert_chain = 1}`` (the leaf first, the root
last). The message classes are built here from a descriptor, so no Istio protos are needed
and an istio-agent speaks to it unchanged.

A caller is authenticated (:class:`CallerAuthenticator`) by, in order:

1. mTLS: a client certificate this CA issued, still valid (the secure port requires one);
   the identity is its SPIFFE ID;
2. ``authorization: Bearer <token>`` metadata, checked by each token authenticator in turn
   (:class:`~._tokens.BootstrapTokens`, :class:`~._tokens.KubernetesTokenReviewer`).

Only the private key's owner can make a CSR the service accepts; the certificate is for the
caller's identity, and a CSR asking for another is refused with ``PERMISSION_DENIED``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import grpc

from ..._log_limit import LogLimiter
from ...security._ca_messages import (
    CA_METHOD,
    CA_SERVICE,
    IstioCertificateRequest,
    IstioCertificateResponse,
)
from ._authority import CertificateAuthority, CertificateError
from ._tokens import AuthenticationError, TokenAuthenticator

__all__ = [
    "CA_METHOD",
    "CA_SERVICE",
    "CallerAuthenticator",
    "CertificateService",
    "IstioCertificateRequest",
    "IstioCertificateResponse",
]

log = logging.getLogger(__name__)
_refusals = LogLimiter(log)  # one line per reason per interval, not per refused call

_MIN_TTL, _MAX_TTL = 60, 7 * 24 * 3600


def _first(values: Iterable[bytes] | None) -> bytes | None:
    for value in values or ():
        return value
    return None


class CallerAuthenticator:
    """Who a gRPC caller is: its CA-issued client certificate, else its bearer token."""

    def __init__(self, ca: CertificateAuthority, tokens: Sequence[TokenAuthenticator] = ()):
        self.ca = ca
        self.tokens = tuple(tokens)

    def identify(
        self, auth_context: Mapping[str, Iterable[bytes]], metadata: Iterable[tuple[str, Any]]
    ) -> str:
        """The caller's SPIFFE ID; :class:`AuthenticationError` if it has none we trust."""
        pem = _first(auth_context.get("x509_pem_cert"))
        if pem:
            try:
                return self.ca.verify(pem)
            except (CertificateError, ValueError) as err:
                raise AuthenticationError(f"client certificate: {err}") from None
        bearer = [
            str(v) for k, v in metadata if k.lower() == "authorization" and isinstance(v, str)
        ]
        if not bearer:
            raise AuthenticationError("no client certificate and no bearer token")
        scheme, _, token = bearer[0].partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationError("authorization metadata is not 'Bearer <token>'")
        reasons = []
        for authenticator in self.tokens:
            try:
                return authenticator.authenticate(token.strip())
            except AuthenticationError as err:
                reasons.append(str(err))
        raise AuthenticationError("; ".join(reasons) or "no token authenticator configured")

    def identify_context(self, context: Any) -> str:
        """:meth:`identify` for a ``grpc`` (or ``grpc.aio``) servicer context."""
        return self.identify(context.auth_context(), context.invocation_metadata() or ())


class CertificateService:
    """``CreateCertificate``: signs an authenticated caller's CSR for its own identity.

    ``default_ttl`` applies when the request asks for no ``validity_duration``; a request's
    own is clamped to between one minute and ``max_ttl``.
    """

    def __init__(
        self,
        ca: CertificateAuthority,
        authenticator: CallerAuthenticator,
        *,
        default_ttl: float = 24 * 3600.0,
        max_ttl: float = _MAX_TTL,
    ) -> None:
        self.ca = ca
        self.authenticator = authenticator
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl
        self.issued = 0
        self.refused = 0

    def create(self, request: Any, context: Any) -> Any:
        """Handle one request (works for sync and ``grpc.aio`` contexts alike)."""
        peer = context.peer()
        try:
            identity = self.authenticator.identify_context(context)
        except AuthenticationError as err:
            self.refused += 1
            _refusals.warning(("anonymous", str(err)), "CSR from %s refused: %s", peer, err)
            return self._abort(context, grpc.StatusCode.UNAUTHENTICATED, str(err))
        ttl = float(request.validity_duration) or self.default_ttl
        ttl = min(max(ttl, _MIN_TTL), self.max_ttl)
        try:
            leaf = self.ca.sign_csr(request.csr.encode(), identity, ttl)
        except CertificateError as err:
            self.refused += 1
            _refusals.warning(
                (identity, str(err)), "CSR from %s (%s) refused: %s", peer, identity, err
            )
            code = (
                grpc.StatusCode.PERMISSION_DENIED
                if "authenticated as" in str(err)
                else grpc.StatusCode.INVALID_ARGUMENT
            )
            return self._abort(context, code, str(err))
        self.issued += 1
        log.info("issued a certificate for %s to %s (ttl %.0fs)", identity, peer, ttl)
        return IstioCertificateResponse(cert_chain=[leaf.decode(), self.ca.root_pem.decode()])

    @staticmethod
    def _abort(context: Any, code: grpc.StatusCode, message: str) -> Any:
        context.set_code(code)
        context.set_details(message)
        return IstioCertificateResponse()

    def handler(self) -> grpc.GenericRpcHandler:
        """A generic handler for a ``grpc.aio`` server (the control plane's)."""

        async def create(request: Any, context: Any) -> Any:
            return self.create(request, context)

        method = grpc.unary_unary_rpc_method_handler(
            create,
            request_deserializer=IstioCertificateRequest.FromString,
            response_serializer=IstioCertificateResponse.SerializeToString,
        )
        return grpc.method_handlers_generic_handler(CA_SERVICE, {"CreateCertificate": method})
