"""A workload's certificate agent, as istio-agent is one: its key never leaves it.

:class:`CertificateAgent` generates an EC P-256 key, sends a CSR for the workload's SPIFFE
ID to the control plane's ``IstioCertificateService/CreateCertificate`` and writes
``cert-chain.pem``, ``key.pem`` and ``root-cert.pem`` where a bootstrap's ``file_watcher``
certificate provider reads them; then renews ``renew_fraction`` into each certificate's
lifetime, on its own daemon thread.

The first CSR is authenticated with a bootstrap token (``authorization: Bearer``): a
Kubernetes service-account token with audience ``istio-ca``, or one the embedded control
plane issued (``ControlPlane.tokens.issue``). Renewals go to ``secure_address`` when given,
authenticated by mTLS with the certificate being renewed (as istio-agent renews with its
current certificate); without it, the token is sent again.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ._atomic import atomic_write
from ._ca_messages import CA_METHOD, IstioCertificateRequest, IstioCertificateResponse
from ._renewal import RenewalLoop

__all__ = ["AgentError", "CertificateAgent", "IssuedCertificate"]

log = logging.getLogger(__name__)

CA_SERVER_NAME = "istiod.istio-system.svc"  # the control plane certificate's DNS SAN
_CERT_CHAIN, _KEY, _ROOT = "cert-chain.pem", "key.pem", "root-cert.pem"


class AgentError(Exception):
    """A certificate the agent could not get; the message says why (the CA's status)."""


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate the agent holds, with the key it generated."""

    cert_pem: bytes
    key_pem: bytes
    root_pem: bytes
    received_at: dt.datetime
    not_after: dt.datetime

    def renew_at(self, fraction: float) -> dt.datetime:
        """``fraction`` of the lifetime left when it arrived (a CA back-dates its start)."""
        return self.received_at + (self.not_after - self.received_at) * fraction


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CertificateAgent(RenewalLoop):
    """Keeps ``directory`` holding a fresh certificate for ``spiffe_id`` (see module doc).

    ``root_cert`` (PEM bytes or a file) is the root that the control plane's TLS port must
    chain to; ``token`` is the bootstrap token, or a callable returning it (a projected
    token file is re-read for every request that way).
    """

    def __init__(
        self,
        address: str,
        spiffe_id: str,
        directory: str | os.PathLike[str],
        *,
        token: str | Callable[[], str] | None = None,
        secure_address: str | None = None,
        root_cert: bytes | str | os.PathLike[str] | None = None,
        ttl: float = 24 * 3600.0,
        renew_fraction: float = 0.5,
        retry_interval: float = 5.0,
        timeout: float = 10.0,
        server_name: str = CA_SERVER_NAME,
        on_rotate: Callable[[IssuedCertificate], None] | None = None,
    ) -> None:
        if not 0 < renew_fraction < 1:
            raise AgentError(f"renew_fraction: must be between 0 and 1, got {renew_fraction}")
        if token is None and secure_address is None:
            raise AgentError("give a bootstrap token, or a secure_address to renew over mTLS")
        self.address = address
        self.spiffe_id = spiffe_id
        self.directory = Path(directory)
        self.secure_address = secure_address
        if isinstance(root_cert, str | os.PathLike):
            root_cert = Path(root_cert).read_bytes()
        self.root_cert = root_cert
        self.ttl = ttl
        self.renew_fraction = renew_fraction
        self.retry_interval = retry_interval
        self.timeout = timeout
        self.server_name = server_name
        self.on_rotate = on_rotate
        self._token = token
        self.current: IssuedCertificate | None = None
        self.rotations = 0
        self._init_loop()

    renew_errors = (OSError, AgentError)
    thread_prefix = "cert-agent"

    def __repr__(self) -> str:
        return f"<CertificateAgent {self.spiffe_id} via {self.address} -> {self.directory}>"

    # -- one request ---------------------------------------------------------------------

    def _csr(self, key: ec.EllipticCurvePrivateKey) -> bytes:
        san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(self.spiffe_id)])
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([]))
            .add_extension(san, critical=True)
            .sign(key, hashes.SHA256())
        )
        return csr.public_bytes(serialization.Encoding.PEM)

    def _channel(self) -> tuple[grpc.Channel, list[tuple[str, str]]]:
        held = self.current
        if held is not None and self.secure_address is not None:
            creds = grpc.ssl_channel_credentials(
                root_certificates=self.root_cert or held.root_pem,
                private_key=held.key_pem,
                certificate_chain=held.cert_pem,
            )
            options = [("grpc.ssl_target_name_override", self.server_name)]
            return grpc.secure_channel(self.secure_address, creds, options), []
        token = self._token() if callable(self._token) else self._token
        if not token:
            raise AgentError("no bootstrap token and no certificate to renew with")
        return grpc.insecure_channel(self.address), [("authorization", f"Bearer {token}")]

    def request(self) -> IssuedCertificate:
        """Generate a key, send a CSR and return what the CA issued (nothing is written)."""
        key = ec.generate_private_key(ec.SECP256R1())
        request = IstioCertificateRequest(
            csr=self._csr(key).decode(), validity_duration=int(self.ttl)
        )
        channel, metadata = self._channel()
        try:
            call = channel.unary_unary(
                CA_METHOD,
                request_serializer=IstioCertificateRequest.SerializeToString,
                response_deserializer=IstioCertificateResponse.FromString,
            )
            response = call(request, timeout=self.timeout, metadata=metadata)
        except grpc.RpcError as err:
            raise AgentError(f"CreateCertificate: {err.code().name}: {err.details()}") from None
        finally:
            channel.close()
        return self._check(key, list(response.cert_chain))

    def _check(self, key: ec.EllipticCurvePrivateKey, chain: list[str]) -> IssuedCertificate:
        if len(chain) < 2:
            raise AgentError(f"CreateCertificate: expected a leaf and a root, got {len(chain)}")
        leaf = x509.load_pem_x509_certificate(chain[0].encode())
        if leaf.public_key() != key.public_key():
            raise AgentError("CreateCertificate: the certificate is not for the key sent")
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        if san.get_values_for_type(x509.UniformResourceIdentifier) != [self.spiffe_id]:
            raise AgentError(f"CreateCertificate: the certificate is not for {self.spiffe_id}")
        root = self.root_cert or chain[-1].encode()
        return IssuedCertificate(
            cert_pem="".join(chain[:-1]).encode(),
            key_pem=key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            root_pem=root,
            received_at=_now(),
            not_after=leaf.not_valid_after_utc,
        )

    def rotate_now(self) -> IssuedCertificate:
        """Get a new certificate and write the three files (root, then key, then chain)."""
        issued = self.request()
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write(self.directory / _ROOT, issued.root_pem)
        atomic_write(self.directory / _KEY, issued.key_pem, 0o600)
        atomic_write(self.directory / _CERT_CHAIN, issued.cert_pem)
        self.current = issued
        self.rotations += 1
        log.info(
            "certificate for %s written to %s (expires %s)",
            self.spiffe_id,
            self.directory,
            issued.not_after,
        )
        if self.on_rotate is not None:
            self.on_rotate(issued)
        return issued

    # -- the renewal thread ----------------------------------------------------------------

    def seconds_until_renewal(self) -> float:
        """Seconds until the current certificate is due for renewal (0 if none)."""
        if self.current is None:
            return 0.0
        due = self.current.renew_at(self.renew_fraction)
        return max(0.0, (due - _now()).total_seconds())
