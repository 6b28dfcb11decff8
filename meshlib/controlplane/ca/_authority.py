"""The mesh certificate authority: a root and short-lived SPIFFE workload certificates.

The root (EC P-256, CA with path length 0) lives in a directory as ``root-cert.pem`` and
``root-key.pem`` and is created on first use. Workload certificates carry the workload's
SPIFFE ID (``spiffe://cluster.local/ns/NS/sa/SA``) as their only URI SAN and are valid for
both client and server TLS. :meth:`CertificateAuthority.write_workload_files` writes them
where a bootstrap's ``file_watcher`` certificate provider reads them, as istio-agent does.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ...security._atomic import atomic_write
from ...security._renewal import RenewalLoop

log = logging.getLogger(__name__)

__all__ = [
    "CA_CERT_FILE",
    "CA_KEY_FILE",
    "CERT_CHAIN_FILE",
    "KEY_FILE",
    "ROOT_CERT_FILE",
    "CertificateAuthority",
    "CertificateError",
    "WorkloadCertRotator",
    "WorkloadCertificate",
    "WorkloadFiles",
    "atomic_write",
    "spiffe_id",
]

CA_CERT_FILE = "root-cert.pem"
CA_KEY_FILE = "root-key.pem"
# The names istio-agent writes under /var/lib/istio/data.
CERT_CHAIN_FILE = "cert-chain.pem"
KEY_FILE = "key.pem"
ROOT_CERT_FILE = "root-cert.pem"

_ROOT_LIFETIME = dt.timedelta(days=3650)
_CLOCK_SKEW = dt.timedelta(minutes=1)
_TRUST_DOMAIN = re.compile(r"^[a-z0-9._-]+$")
# SPIFFE ID spec: segments of letters, digits, dots, dashes, underscores; no "." or "..".
_SPIFFE_PATH = re.compile(r"^(/(?!\.\.?(/|$))[A-Za-z0-9._-]+)+$")


class CertificateError(ValueError):
    """A CA directory, certificate or SPIFFE ID that cannot be used."""


def spiffe_id(namespace: str, service_account: str, trust_domain: str = "cluster.local") -> str:
    """Istio's workload identity: ``spiffe://<trust_domain>/ns/<namespace>/sa/<sa>``."""
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


@dataclass(frozen=True)
class WorkloadCertificate:
    """A workload certificate (PEM, signed by the root) and its private key (PKCS#8 PEM)."""

    cert_pem: bytes
    key_pem: bytes
    not_after: dt.datetime
    spiffe_id: str = ""
    issued_at: dt.datetime | None = None

    def renew_at(self, renew_fraction: float = 0.5) -> dt.datetime:
        """When to replace this certificate: ``renew_fraction`` of its lifetime after issue."""
        start = self.issued_at or self.certificate.not_valid_before_utc
        return start + (self.not_after - start) * renew_fraction

    @property
    def certificate(self) -> x509.Certificate:
        """The parsed certificate."""
        return x509.load_pem_x509_certificate(self.cert_pem)


@dataclass(frozen=True)
class WorkloadFiles:
    """Where :meth:`CertificateAuthority.write_workload_files` wrote a workload's files."""

    cert_chain: Path
    key: Path
    root_cert: Path


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key_usage(**flags: bool) -> x509.KeyUsage:
    names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment")
    more = ("key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    return x509.KeyUsage(**{name: flags.get(name, False) for name in names + more})


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class CertificateAuthority:
    """A root CA kept in ``directory`` (created with a new root if empty).

    ``trust_domain`` is the SPIFFE trust domain every issued identity must belong to.
    Issuing is thread-safe.
    """

    def __init__(self, directory: str | os.PathLike[str], *, trust_domain: str = "cluster.local"):
        if not _TRUST_DOMAIN.match(trust_domain):
            raise CertificateError(f"trust_domain: {trust_domain!r} is not a valid trust domain")
        self.directory = Path(directory)
        self.trust_domain = trust_domain
        self._lock = threading.Lock()
        cert_path = self.directory / CA_CERT_FILE
        key_path = self.directory / CA_KEY_FILE
        if cert_path.exists() or key_path.exists():
            self._key, self._cert = self._load(cert_path, key_path)
        else:
            self._key, self._cert = self._create(cert_path, key_path)
        self.root_pem: bytes = self._cert.public_bytes(serialization.Encoding.PEM)

    def __repr__(self) -> str:
        return f"CertificateAuthority({str(self.directory)!r}, trust_domain={self.trust_domain!r})"

    @property
    def root_certificate(self) -> x509.Certificate:
        """The parsed root certificate."""
        return self._cert

    def _create(
        self, cert_path: Path, key_path: Path
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        self.directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.trust_domain),
                x509.NameAttribute(NameOID.COMMON_NAME, "meshlib root CA"),
            ]
        )
        now = _now()
        public = key.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _CLOCK_SKEW)
            .not_valid_after(now + _ROOT_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                _key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256())
        )
        # Key first: a concurrent loader that sees the certificate also sees its key.
        atomic_write(key_path, _pem_key(key), 0o600)
        atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
        return key, cert

    def _load(
        self, cert_path: Path, key_path: Path
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        try:
            cert_data = cert_path.read_bytes()
            key_data = key_path.read_bytes()
        except OSError as err:
            raise CertificateError(
                f"{err.filename}: cannot read CA file: {err.strerror}"
                f" (a CA directory holds both {CA_CERT_FILE} and {CA_KEY_FILE})"
            ) from None
        try:
            cert = x509.load_pem_x509_certificate(cert_data)
        except ValueError as err:
            raise CertificateError(f"{cert_path}: not a PEM certificate: {err}") from None
        try:
            key = serialization.load_pem_private_key(key_data, password=None)
        except (ValueError, TypeError) as err:
            raise CertificateError(f"{key_path}: not an unencrypted PEM key: {err}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise CertificateError(f"{key_path}: must be an EC P-256 private key")
        if key.public_key() != cert.public_key():
            raise CertificateError(f"{key_path}: does not match the certificate in {cert_path}")
        try:
            constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.ca:
            raise CertificateError(f"{cert_path}: not a CA certificate (basicConstraints CA:TRUE)")
        if cert.not_valid_after_utc <= _now():
            raise CertificateError(
                f"{cert_path}: root certificate expired at {cert.not_valid_after_utc}"
            )
        return key, cert

    def check_spiffe_id(self, identity: str) -> str:
        """Return ``identity`` if it is a SPIFFE ID in this CA's trust domain, else raise."""
        prefix = f"spiffe://{self.trust_domain}"
        if not identity.startswith("spiffe://"):
            raise CertificateError(f"spiffe_id: {identity!r} must start with spiffe://")
        if not identity.startswith(prefix + "/"):
            raise CertificateError(
                f"spiffe_id: {identity!r} is not in trust domain {self.trust_domain!r}"
            )
        if not _SPIFFE_PATH.match(identity[len(prefix) :]):
            raise CertificateError(f"spiffe_id: {identity!r} has an invalid path")
        return identity

    def issue(
        self, spiffe_id: str, ttl: float = 3600, *, dns_names: Sequence[str] = ()
    ) -> WorkloadCertificate:
        """A new key and a certificate for ``spiffe_id`` valid for ``ttl`` seconds.

        The lifetime never extends past the root's own expiry. ``dns_names`` are added as
        DNS SANs (a server's, such as the control plane's own).
        """
        key = ec.generate_private_key(ec.SECP256R1())
        cert, now = self._sign(key.public_key(), spiffe_id, ttl, dns_names)
        return WorkloadCertificate(
            cert_pem=cert.public_bytes(serialization.Encoding.PEM),
            key_pem=_pem_key(key),
            not_after=cert.not_valid_after_utc,
            spiffe_id=spiffe_id,
            issued_at=now,
        )

    def sign_csr(self, csr_pem: bytes, spiffe_id: str, ttl: float = 3600) -> bytes:
        """Sign a PKCS#10 CSR for ``spiffe_id`` (the caller's authenticated identity).

        The CSR's signature must be valid (its maker holds the private key); URI SANs it
        asks for must all be ``spiffe_id``. Only its public key is used: the certificate
        is built as :meth:`issue` builds one. Returns the certificate (PEM).
        """
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as err:
            raise CertificateError(f"csr: not a PEM certificate request: {err}") from None
        if not csr.is_signature_valid:
            raise CertificateError("csr: signature does not match its public key")
        try:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            asked = set(san.get_values_for_type(x509.UniformResourceIdentifier))
        except x509.ExtensionNotFound:
            asked = set()
        if asked - {spiffe_id}:
            raise CertificateError(
                f"csr: asks for {sorted(asked)}, the caller is authenticated as {spiffe_id}"
            )
        public = csr.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise CertificateError("csr: the public key must be EC or RSA")
        if isinstance(public, rsa.RSAPublicKey) and public.key_size < 2048:
            raise CertificateError("csr: an RSA key must have at least 2048 bits")
        cert, _ = self._sign(public, spiffe_id, ttl)
        return cert.public_bytes(serialization.Encoding.PEM)

    def _sign(
        self,
        public: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
        spiffe_id: str,
        ttl: float,
        dns_names: Sequence[str] = (),
    ) -> tuple[x509.Certificate, dt.datetime]:
        self.check_spiffe_id(spiffe_id)
        if not ttl > 0:
            raise CertificateError(f"ttl: must be positive, got {ttl}")
        now = _now()
        not_after = min(now + dt.timedelta(seconds=ttl), self._cert.not_valid_after_utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self._cert.subject)
            .public_key(public)
            .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
            .not_valid_before(now - _CLOCK_SKEW)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                _key_usage(digital_signature=True),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            # An empty subject makes the SAN the identity, so it must be critical (RFC 5280).
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(spiffe_id)]
                    + [x509.DNSName(name) for name in dns_names]
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        with self._lock:
            cert = builder.sign(self._key, hashes.SHA256())
        return cert, now

    def verify(self, cert_pem: bytes) -> str:
        """Check ``cert_pem`` was signed by this root and is valid now; return its SPIFFE ID."""
        cert = x509.load_pem_x509_certificate(cert_pem)
        try:
            cert.verify_directly_issued_by(self._cert)
        except (ValueError, TypeError, InvalidSignature) as err:
            raise CertificateError(f"certificate not issued by this CA: {err}") from None
        now = _now()
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise CertificateError(
                f"certificate not valid now (expires {cert.not_valid_after_utc})"
            )
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        if len(uris) != 1:
            raise CertificateError(f"certificate must have exactly one URI SAN, has {uris}")
        return self.check_spiffe_id(uris[0])

    def write_workload_files(
        self, spiffe_id: str, directory: str | os.PathLike[str], ttl: float = 3600
    ) -> WorkloadFiles:
        """Issue a certificate and write ``cert-chain.pem``, ``key.pem``, ``root-cert.pem``.

        Each file is replaced atomically; the root is written first, then the key, then the
        certificate, so a reader that checks the key matches the certificate (as gRPC's
        file watcher does) sees a consistent pair once the certificate changes.
        """
        return self.write_certificate(self.issue(spiffe_id, ttl), directory)

    def write_certificate(
        self, cert: WorkloadCertificate, directory: str | os.PathLike[str]
    ) -> WorkloadFiles:
        """Write an already issued ``cert`` as :meth:`write_workload_files` does."""
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        files = WorkloadFiles(
            cert_chain=target / CERT_CHAIN_FILE,
            key=target / KEY_FILE,
            root_cert=target / ROOT_CERT_FILE,
        )
        if files.root_cert.resolve() != (self.directory / CA_CERT_FILE).resolve():
            atomic_write(files.root_cert, self.root_pem)
        atomic_write(files.key, cert.key_pem, 0o600)
        atomic_write(files.cert_chain, cert.cert_pem)
        return files


class WorkloadCertRotator(RenewalLoop):
    """Keeps a workload's certificate files fresh: re-issues ``renew_fraction`` into each
    certificate's lifetime, on its own daemon thread.

    :meth:`start` writes the first certificate before returning, so the files exist once it
    returns. A failed write is logged and retried every ``retry_interval`` seconds.
    ``on_rotate`` is called (on the rotator's thread) with each certificate written.
    """

    def __init__(
        self,
        ca: CertificateAuthority,
        spiffe_id: str,
        directory: str | os.PathLike[str],
        ttl: float = 3600,
        renew_fraction: float = 0.5,
        *,
        retry_interval: float = 5.0,
        on_rotate: Callable[[WorkloadCertificate], None] | None = None,
    ) -> None:
        if not 0 < renew_fraction < 1:
            raise CertificateError(f"renew_fraction: must be between 0 and 1, got {renew_fraction}")
        self.ca = ca
        self.spiffe_id = ca.check_spiffe_id(spiffe_id)
        self.directory = Path(directory)
        self.ttl = ttl
        self.renew_fraction = renew_fraction
        self.retry_interval = retry_interval
        self.on_rotate = on_rotate
        self.rotations = 0
        self.current: WorkloadCertificate | None = None
        self.files: WorkloadFiles | None = None
        self._init_loop()

    renew_errors = (OSError, CertificateError)
    thread_prefix = "cert-rotator"

    def __repr__(self) -> str:
        return f"<WorkloadCertRotator {self.spiffe_id} -> {self.directory}>"

    def rotate_now(self) -> WorkloadCertificate:
        """Issue and write a new certificate now."""
        cert = self.ca.issue(self.spiffe_id, self.ttl)
        self.files = self.ca.write_certificate(cert, self.directory)
        self.current = cert
        self.rotations += 1
        log.info(
            "wrote certificate for %s to %s (expires %s)",
            self.spiffe_id,
            self.directory,
            cert.not_after,
        )
        if self.on_rotate is not None:
            self.on_rotate(cert)
        return cert

    def seconds_until_renewal(self, now: dt.datetime | None = None) -> float:
        """Seconds from ``now`` until the current certificate is due for renewal (0 if none)."""
        if self.current is None:
            return 0.0
        due = self.current.renew_at(self.renew_fraction)
        return max(0.0, (due - (now or _now())).total_seconds())
