"""Mesh security: the certificate agent, certificate providers, mTLS contexts and SPIFFE
identity checks."""

from ._agent import AgentError, CertificateAgent, IssuedCertificate
from ._contexts import client_context, server_context
from ._provider import CertificateFiles, FileWatcherProvider, provider_from_config
from ._spiffe import SanMatcher, identity_mismatch, peer_sans, peer_spiffe_id
from ._upstream import (
    CertificateProviders,
    RotatingClientContext,
    UpstreamTlsError,
    alpn_for,
    upstream_context,
)

__all__ = [
    "AgentError",
    "CertificateAgent",
    "CertificateFiles",
    "CertificateProviders",
    "FileWatcherProvider",
    "IssuedCertificate",
    "RotatingClientContext",
    "SanMatcher",
    "UpstreamTlsError",
    "alpn_for",
    "client_context",
    "identity_mismatch",
    "peer_sans",
    "peer_spiffe_id",
    "provider_from_config",
    "server_context",
    "upstream_context",
]
