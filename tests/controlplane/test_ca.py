"""The mesh CA: root creation and reuse, SPIFFE workload certificates, files, rotation."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from meshlib.controlplane import (
    CertificateAuthority,
    CertificateError,
    WorkloadCertificate,
    WorkloadCertRotator,
    spiffe_id,
)

REVIEWS = "spiffe://cluster.local/ns/default/sa/reviews"
PRODUCTPAGE = "spiffe://cluster.local/ns/default/sa/productpage"


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path / "ca")


def test_root_is_created_once_and_reloaded(tmp_path: Path) -> None:
    first = CertificateAuthority(tmp_path / "ca")
    key_file = tmp_path / "ca" / "root-key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert (tmp_path / "ca" / "root-cert.pem").read_bytes() == first.root_pem
    again = CertificateAuthority(tmp_path / "ca")
    assert again.root_pem == first.root_pem
    # A certificate from one instance verifies against the other: same key.
    assert again.verify(first.issue(REVIEWS).cert_pem) == REVIEWS


def test_root_certificate_profile(ca: CertificateAuthority) -> None:
    root = x509.load_pem_x509_certificate(ca.root_pem)
    constraints = root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert (constraints.value.ca, constraints.value.path_length) == (True, 0)
    usage = root.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    key = root.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert key.curve.name == "secp256r1"
    root.verify_directly_issued_by(root)  # self-signed
    assert "O=cluster.local" in root.subject.rfc4514_string()


def test_workload_certificate_profile(ca: CertificateAuthority) -> None:
    before = dt.datetime.now(dt.UTC)
    issued = ca.issue(REVIEWS, ttl=600)
    cert = issued.certificate
    cert.verify_directly_issued_by(ca.root_certificate)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical  # the subject is empty: the SAN is the identity
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [REVIEWS]
    assert cert.subject == x509.Name([])
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    key = serialization.load_pem_private_key(issued.key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key() == cert.public_key()
    assert issued.not_after == cert.not_valid_after_utc
    assert issued.issued_at is not None and issued.issued_at >= before
    lifetime = issued.not_after - issued.issued_at  # X.509 times have whole seconds
    assert dt.timedelta(seconds=599) < lifetime <= dt.timedelta(seconds=600)
    assert issued.spiffe_id == REVIEWS
    # Each issue makes a fresh key and serial.
    other = ca.issue(REVIEWS, ttl=600)
    assert other.key_pem != issued.key_pem
    assert other.certificate.serial_number != cert.serial_number


def test_lifetime_never_exceeds_the_root(ca: CertificateAuthority) -> None:
    issued = ca.issue(REVIEWS, ttl=100 * 365 * 86400)
    assert issued.not_after == ca.root_certificate.not_valid_after_utc


def test_spiffe_id_helper() -> None:
    assert spiffe_id("shop", "web") == "spiffe://cluster.local/ns/shop/sa/web"
    assert spiffe_id("a", "b", "example.org") == "spiffe://example.org/ns/a/sa/b"


@pytest.mark.parametrize(
    ("identity", "message"),
    [
        ("https://cluster.local/ns/a/sa/b", "must start with spiffe://"),
        ("spiffe://other.domain/ns/a/sa/b", "is not in trust domain 'cluster.local'"),
        ("spiffe://cluster.local", "is not in trust domain"),
        ("spiffe://cluster.local/ns//sa/b", "has an invalid path"),
        ("spiffe://cluster.local/ns/a/sa/b?x=1", "has an invalid path"),
        ("spiffe://cluster.local/ns/./sa/b", "has an invalid path"),
        ("spiffe://cluster.local/ns/a/sa/..", "has an invalid path"),
        ("spiffe://cluster.local/ns/a b/sa/c", "has an invalid path"),
    ],
)
def test_bad_spiffe_ids_are_refused(ca: CertificateAuthority, identity: str, message: str) -> None:
    with pytest.raises(CertificateError, match=r"^spiffe_id: .*" + message.replace("?", r"\?")):
        ca.issue(identity)


def test_bad_ttl_and_trust_domain(tmp_path: Path, ca: CertificateAuthority) -> None:
    with pytest.raises(CertificateError, match="ttl: must be positive"):
        ca.issue(REVIEWS, ttl=0)
    with pytest.raises(CertificateError, match="trust_domain: 'Bad Domain'"):
        CertificateAuthority(tmp_path / "x", trust_domain="Bad Domain")
    with pytest.raises(CertificateError, match="renew_fraction: must be between 0 and 1"):
        WorkloadCertRotator(ca, REVIEWS, tmp_path / "w", renew_fraction=1.0)


def test_bad_ca_directories_name_the_file(tmp_path: Path, ca: CertificateAuthority) -> None:
    half = tmp_path / "half"
    half.mkdir()
    (half / "root-cert.pem").write_bytes(ca.root_pem)
    with pytest.raises(CertificateError, match=r"half/root-key\.pem: cannot read CA file"):
        CertificateAuthority(half)

    other = CertificateAuthority(tmp_path / "other")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "root-cert.pem").write_bytes(ca.root_pem)
    (mixed / "root-key.pem").write_bytes((other.directory / "root-key.pem").read_bytes())
    with pytest.raises(CertificateError, match=r"mixed/root-key\.pem: does not match"):
        CertificateAuthority(mixed)

    (mixed / "root-cert.pem").write_text("not a certificate")
    with pytest.raises(CertificateError, match=r"mixed/root-cert\.pem: not a PEM certificate"):
        CertificateAuthority(mixed)

    leaf_dir = tmp_path / "leaf"
    files = ca.write_workload_files(REVIEWS, leaf_dir)
    files.cert_chain.rename(leaf_dir / "root-cert.pem")
    files.key.rename(leaf_dir / "root-key.pem")
    with pytest.raises(CertificateError, match=r"leaf/root-cert\.pem: not a CA certificate"):
        CertificateAuthority(leaf_dir)


def test_verify_rejects_a_foreign_certificate(tmp_path: Path, ca: CertificateAuthority) -> None:
    foreign = CertificateAuthority(tmp_path / "foreign").issue(REVIEWS)
    with pytest.raises(CertificateError, match="not issued by this CA"):
        ca.verify(foreign.cert_pem)


def test_workload_files_are_where_file_watcher_reads_them(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    files = ca.write_workload_files(REVIEWS, tmp_path / "istio-data", ttl=300)
    assert [files.cert_chain.name, files.key.name, files.root_cert.name] == [
        "cert-chain.pem",
        "key.pem",
        "root-cert.pem",
    ]
    assert files.root_cert.read_bytes() == ca.root_pem
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    assert ca.verify(files.cert_chain.read_bytes()) == REVIEWS
    assert sorted(p.name for p in files.cert_chain.parent.iterdir()) == [
        "cert-chain.pem",
        "key.pem",
        "root-cert.pem",
    ]


def _serve_tls_once(context: ssl.SSLContext, listener: socket.socket, seen: list[object]) -> None:
    conn, _ = listener.accept()
    try:
        with context.wrap_socket(conn, server_side=True) as tls:
            seen.append(tls.getpeercert())
            tls.sendall(b"ok")
    except (ssl.SSLError, OSError) as err:
        seen.append(err)


def _context(purpose: ssl.Purpose, files_dir: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(purpose, cafile=str(files_dir / "root-cert.pem"))
    context.load_cert_chain(str(files_dir / "cert-chain.pem"), str(files_dir / "key.pem"))
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def test_mutual_tls_handshake_with_issued_files(tmp_path: Path, ca: CertificateAuthority) -> None:
    ca.write_workload_files(REVIEWS, tmp_path / "server")
    ca.write_workload_files(PRODUCTPAGE, tmp_path / "client")
    CertificateAuthority(tmp_path / "rogue-ca").write_workload_files(
        PRODUCTPAGE, tmp_path / "rogue"
    )
    server_ctx = _context(ssl.Purpose.CLIENT_AUTH, tmp_path / "server")

    def connect(client_dir: Path) -> tuple[object, object]:
        seen: list[object] = []
        with socket.create_server(("127.0.0.1", 0)) as listener:
            thread = threading.Thread(target=_serve_tls_once, args=(server_ctx, listener, seen))
            thread.start()
            client_ctx = _context(ssl.Purpose.SERVER_AUTH, client_dir)
            result: object
            try:
                with (
                    socket.create_connection(listener.getsockname(), timeout=10) as raw,
                    client_ctx.wrap_socket(raw) as tls,
                ):
                    result = (tls.getpeercert(), tls.recv(2))
            except (ssl.SSLError, OSError) as err:
                result = err
            thread.join(10)
        return result, seen[0]

    (server_cert, data), client_cert = connect(tmp_path / "client")  # type: ignore[misc]
    assert data == b"ok"
    assert server_cert["subjectAltName"] == (("URI", REVIEWS),)  # type: ignore[index]
    assert client_cert["subjectAltName"] == (("URI", PRODUCTPAGE),)  # type: ignore[index]

    _, refused = connect(tmp_path / "rogue")  # a client certificate from another CA
    assert isinstance(refused, ssl.SSLError)


def test_rewrites_are_atomic_for_readers(tmp_path: Path, ca: CertificateAuthority) -> None:
    target = tmp_path / "data"
    ca.write_workload_files(REVIEWS, target)
    certs = [ca.issue(REVIEWS, ttl=60) for _ in range(20)]
    stop = threading.Event()
    bad: list[str] = []
    reads = 0

    def reader() -> None:
        nonlocal reads
        while not stop.is_set() and reads < 100_000:
            data = (target / "cert-chain.pem").read_bytes()
            reads += 1
            try:
                x509.load_pem_x509_certificate(data)
            except ValueError as err:
                bad.append(str(err))

    thread = threading.Thread(target=reader)
    thread.start()
    for _ in range(2):
        for cert in certs:
            ca.write_certificate(cert, target)
    stop.set()
    thread.join(10)
    assert reads > 0
    assert bad == []
    assert sorted(p.name for p in target.iterdir()) == [
        "cert-chain.pem",
        "key.pem",
        "root-cert.pem",
    ]


def test_renewal_time_is_a_fraction_of_the_lifetime() -> None:
    issued = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    cert = WorkloadCertificate(b"", b"", issued + dt.timedelta(hours=1), issued_at=issued)
    assert cert.renew_at() == issued + dt.timedelta(minutes=30)
    assert cert.renew_at(0.8) == issued + dt.timedelta(minutes=48)


def test_rotator_reissues_before_expiry(tmp_path: Path, ca: CertificateAuthority) -> None:
    written: list[WorkloadCertificate] = []
    third = threading.Event()

    def on_rotate(cert: WorkloadCertificate) -> None:
        written.append(cert)
        if len(written) >= 3:
            third.set()

    rotator = WorkloadCertRotator(
        ca, REVIEWS, tmp_path / "data", ttl=1.0, renew_fraction=0.2, on_rotate=on_rotate
    )
    with rotator:
        # start() wrote the first certificate before returning.
        assert rotator.files is not None
        first = x509.load_pem_x509_certificate(rotator.files.cert_chain.read_bytes())
        first.verify_directly_issued_by(ca.root_certificate)  # (its 1 s lifetime may be over)
        assert third.wait(20), f"only {len(written)} certificates written"
    rotations = rotator.rotations
    assert len({c.certificate.serial_number for c in written}) == len(written)
    # Each certificate was scheduled for renewal well before it expires.
    for cert in written:
        assert cert.issued_at is not None
        assert cert.renew_at(0.2) - cert.issued_at == (cert.not_after - cert.issued_at) * 0.2
        assert cert.renew_at(0.2) <= cert.not_after
    on_disk = (tmp_path / "data" / "cert-chain.pem").read_bytes()
    assert on_disk == written[-1].cert_pem
    assert rotator.rotations == rotations  # stopped: no more rotations
    assert rotator.seconds_until_renewal(written[-1].not_after) == 0.0
