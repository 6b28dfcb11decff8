"""What a control plane with a CA serves: the CSR service, caller authentication, and
the TLS credentials of its secure port.

:func:`ca_serving` is all :class:`~meshlib.controlplane.ControlPlane` needs. The secure port
requires a client certificate from this CA (mTLS, as istiod's 15012); the plaintext port
accepts bearer tokens, for a workload's first certificate and for Envoy's SDS (its
``grpc_service.initial_metadata``). The control plane's own certificate is for
``spiffe://<trust domain>/ns/istio-system/sa/istiod`` with DNS SAN :data:`CA_SERVER_NAME`
(clients connecting by IP set ``grpc.ssl_target_name_override`` to it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from ...security._agent import CA_SERVER_NAME
from ._authority import CertificateAuthority, spiffe_id
from ._service import CallerAuthenticator, CertificateService
from ._tokens import BootstrapTokens, TokenAuthenticator

__all__ = ["CA_SERVER_NAME", "CaServing", "ca_serving"]

_SERVER_TTL = 365 * 24 * 3600.0


@dataclass(frozen=True)
class CaServing:
    """The pieces a control plane's gRPC server is given."""

    authenticator: CallerAuthenticator
    service: CertificateService
    credentials: grpc.ServerCredentials
    #: The file-mode token issuer, when the control plane issues its own tokens.
    tokens: BootstrapTokens | None


def ca_serving(
    ca: CertificateAuthority, tokens: Sequence[TokenAuthenticator] | None = None
) -> CaServing:
    """Authentication by mTLS and ``tokens`` (default: :class:`BootstrapTokens` of ``ca``)."""
    own = BootstrapTokens(ca) if tokens is None else None
    checkers: Sequence[TokenAuthenticator] = (own,) if own is not None else tuple(tokens or ())
    authenticator = CallerAuthenticator(ca, checkers)
    identity = spiffe_id("istio-system", "istiod", ca.trust_domain)
    server = ca.issue(identity, _SERVER_TTL, dns_names=[CA_SERVER_NAME, "localhost"])
    credentials = grpc.ssl_server_credentials(
        [(server.key_pem, server.cert_pem)],
        root_certificates=ca.root_pem,
        require_client_auth=True,
    )
    return CaServing(authenticator, CertificateService(ca, authenticator), credentials, own)
