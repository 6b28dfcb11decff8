"""The mesh certificate authority: root and SPIFFE workload certificates, the CSR signing
service (istiod's ``CreateCertificate``) and how its callers are authenticated."""

from ._authority import CertificateAuthority, CertificateError, spiffe_id
from ._service import (
    CA_METHOD,
    CA_SERVICE,
    CallerAuthenticator,
    CertificateService,
    IstioCertificateRequest,
    IstioCertificateResponse,
)
from ._serving import CA_SERVER_NAME, CaServing, ca_serving
from ._tokens import (
    CA_AUDIENCE,
    AuthenticationError,
    BootstrapTokens,
    KubernetesTokenReviewer,
    TokenAuthenticator,
    read_token,
)

__all__ = [
    "CA_AUDIENCE",
    "CA_METHOD",
    "CA_SERVER_NAME",
    "CA_SERVICE",
    "AuthenticationError",
    "BootstrapTokens",
    "CaServing",
    "CallerAuthenticator",
    "CertificateAuthority",
    "CertificateError",
    "CertificateService",
    "IstioCertificateRequest",
    "IstioCertificateResponse",
    "KubernetesTokenReviewer",
    "TokenAuthenticator",
    "ca_serving",
    "read_token",
    "spiffe_id",
]
