"""The CA trusts nobody by default: CSRs are signed for authenticated callers only (bootstrap
token, Kubernetes TokenReview, mTLS with a certificate the CA issued), and SDS secrets go
only to streams authenticated as the identity they hold."""

from __future__ import annotations

import datetime as dt
import queue
import threading
from pathlib import Path

import grpc
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2

from meshlib.controlplane import SECRET_TYPE, CertificateAuthority, ControlPlane
from meshlib.controlplane.ca import (
    CA_METHOD,
    AuthenticationError,
    BootstrapTokens,
    IstioCertificateRequest,
    IstioCertificateResponse,
    KubernetesTokenReviewer,
)
from meshlib.controlplane.sources._watch import make_api_client
from meshlib.controlplane.testing import FakeKubernetesAPI
from meshlib.security import AgentError, CertificateAgent

from .conftest import REVIEWS_YAML, write

PAYMENTS = "spiffe://cluster.local/ns/prod/sa/payments"
REVIEWS = "spiffe://cluster.local/ns/default/sa/reviews"


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path / "ca")


@pytest.fixture
def cp(tmp_path: Path, ca: CertificateAuthority) -> ControlPlane:
    config = write(tmp_path / "c.yaml", REVIEWS_YAML)
    with ControlPlane(config, ca=ca, secure_port=0) as plane:
        yield plane


def _csr(identity: str, key: ec.EllipticCurvePrivateKey | None = None) -> str:
    key = key or ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    csr = csr.add_extension(san, critical=True).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def create(
    address: str,
    csr: str,
    *,
    token: str | None = None,
    creds: grpc.ChannelCredentials | None = None,
) -> IstioCertificateResponse:
    if creds is None:
        channel = grpc.insecure_channel(address)
    else:
        options = [("grpc.ssl_target_name_override", "istiod.istio-system.svc")]
        channel = grpc.secure_channel(address, creds, options)
    metadata = [("authorization", f"Bearer {token}")] if token else []
    with channel:
        call = channel.unary_unary(
            CA_METHOD,
            request_serializer=IstioCertificateRequest.SerializeToString,
            response_deserializer=IstioCertificateResponse.FromString,
        )
        return call(IstioCertificateRequest(csr=csr), metadata=metadata, timeout=5)


def test_agent_gets_a_certificate_with_a_bootstrap_token(
    cp: ControlPlane, ca: CertificateAuthority, tmp_path: Path
) -> None:
    assert cp.tokens is not None
    agent = CertificateAgent(
        cp.address, PAYMENTS, tmp_path / "certs", token=cp.tokens.issue(PAYMENTS)
    )
    issued = agent.rotate_now()
    files = {p.name: p.read_bytes() for p in (tmp_path / "certs").iterdir()}
    assert set(files) == {"cert-chain.pem", "key.pem", "root-cert.pem"}
    assert ca.verify(files["cert-chain.pem"]) == PAYMENTS
    assert files["root-cert.pem"] == ca.root_pem
    key = serialization.load_pem_private_key(files["key.pem"], None)
    assert key.public_key() == x509.load_pem_x509_certificate(issued.cert_pem).public_key()


def test_renewal_over_mtls_needs_no_token(
    cp: ControlPlane, ca: CertificateAuthority, tmp_path: Path
) -> None:
    assert cp.tokens is not None and cp.secure_address is not None
    tokens = [cp.tokens.issue(PAYMENTS)]
    agent = CertificateAgent(
        cp.address,
        PAYMENTS,
        tmp_path / "certs",
        token=lambda: tokens[0],
        secure_address=cp.secure_address,
        root_cert=ca.root_pem,
    )
    first = agent.rotate_now()
    tokens[0] = "revoked"  # only the mTLS path can work now
    second = agent.rotate_now()
    assert second.cert_pem != first.cert_pem and ca.verify(second.cert_pem) == PAYMENTS


def test_agent_rotates_before_expiry(cp: ControlPlane, tmp_path: Path) -> None:
    assert cp.tokens is not None
    seen: queue.Queue[object] = queue.Queue()
    agent = CertificateAgent(
        cp.address,
        PAYMENTS,
        tmp_path / "certs",
        token=cp.tokens.issue(PAYMENTS),
        ttl=60,  # the CA's minimum
        renew_fraction=0.02,  # renew 1.2 s after it arrived
        on_rotate=seen.put,
    )
    with agent:
        seen.get(timeout=5)
        seen.get(timeout=10)  # renewed on its own thread
    assert agent.rotations >= 2


@pytest.mark.parametrize(
    ("token", "code", "needle"),
    [
        (None, grpc.StatusCode.UNAUTHENTICATED, "no client certificate and no bearer token"),
        ("garbage", grpc.StatusCode.UNAUTHENTICATED, "not a meshlib bootstrap token"),
        ("mesh1.e30.AAAA", grpc.StatusCode.UNAUTHENTICATED, "signature does not match"),
    ],
)
def test_refused_tokens(
    cp: ControlPlane, token: str | None, code: grpc.StatusCode, needle: str
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        create(cp.address, _csr(PAYMENTS), token=token)
    assert err.value.code() == code and needle in (err.value.details() or "")


def test_expired_token_and_other_identity_are_refused(cp: ControlPlane) -> None:
    assert cp.tokens is not None
    with pytest.raises(grpc.RpcError) as err:
        create(cp.address, _csr(PAYMENTS), token=cp.tokens.issue(PAYMENTS, ttl=-1))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED and "expired" in str(
        err.value.details()
    )
    with pytest.raises(grpc.RpcError) as err:
        create(cp.address, _csr(PAYMENTS), token=cp.tokens.issue(REVIEWS))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, err.value.details()
    other = BootstrapTokens(CertificateAuthority(Path(cp.ca.directory).parent / "other"))
    with pytest.raises(grpc.RpcError) as err:
        create(cp.address, _csr(PAYMENTS), token=other.issue(PAYMENTS))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_secure_port_refuses_other_ca_and_expired_certificates(
    cp: ControlPlane, ca: CertificateAuthority, tmp_path: Path
) -> None:
    assert cp.secure_address is not None
    other = trustme.CA()
    leaf = other.issue_cert("payments.prod")
    foreign = grpc.ssl_channel_credentials(
        ca.root_pem, leaf.private_key_pem.bytes(), leaf.cert_chain_pems[0].bytes()
    )
    with pytest.raises(grpc.RpcError) as err:
        create(cp.secure_address, _csr(PAYMENTS), creds=foreign)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    # Signed by our CA but expired: refused at the handshake too.
    key = ec.generate_private_key(ec.SECP256R1())
    pem = ca.sign_csr(_csr(PAYMENTS, key).encode(), PAYMENTS, ttl=1)
    cert = x509.load_pem_x509_certificate(pem)
    assert cert.not_valid_after_utc < dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
    threading.Event().wait(
        max(0.0, (cert.not_valid_after_utc - dt.datetime.now(dt.UTC)).total_seconds() + 1.1)
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    expired = grpc.ssl_channel_credentials(ca.root_pem, key_pem, pem)
    with pytest.raises(grpc.RpcError) as err:
        create(cp.secure_address, _csr(PAYMENTS), creds=expired)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    # No client certificate at all: the handshake fails.
    with pytest.raises(grpc.RpcError) as err:
        create(cp.secure_address, _csr(PAYMENTS), creds=grpc.ssl_channel_credentials(ca.root_pem))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mtls_caller_gets_only_its_own_identity(cp: ControlPlane, ca: CertificateAuthority) -> None:
    assert cp.secure_address is not None
    held = ca.issue(REVIEWS)
    creds = grpc.ssl_channel_credentials(ca.root_pem, held.key_pem, held.cert_pem)
    chain = create(cp.secure_address, _csr(REVIEWS), creds=creds).cert_chain
    assert ca.verify(chain[0].encode()) == REVIEWS and chain[-1].encode() == ca.root_pem
    with pytest.raises(grpc.RpcError) as err:
        create(cp.secure_address, _csr(PAYMENTS), creds=creds)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_csr_signature_must_hold(ca: CertificateAuthority) -> None:
    text = _csr(PAYMENTS)
    broken = text.replace(text.splitlines()[3], text.splitlines()[3][::-1])
    with pytest.raises(Exception, match="csr"):
        ca.sign_csr(broken.encode(), PAYMENTS)


def test_agent_refused_raises_agent_error(cp: ControlPlane, tmp_path: Path) -> None:
    agent = CertificateAgent(cp.address, PAYMENTS, tmp_path / "certs", token="nope")
    with pytest.raises(AgentError, match="UNAUTHENTICATED"):
        agent.start()
    assert not (tmp_path / "certs").exists()


# -- Kubernetes TokenReview -----------------------------------------------------------------


def test_kubernetes_token_review(tmp_path: Path, ca: CertificateAuthority) -> None:
    with FakeKubernetesAPI() as api:
        reviewer = KubernetesTokenReviewer(make_api_client(None, None, api.url, None, 1))
        good = api.service_account_token("prod", "payments")
        assert reviewer.authenticate(good) == PAYMENTS
        with pytest.raises(AuthenticationError, match="invalid bearer token"):
            reviewer.authenticate("fake-sa-unknown")
        wrong_audience = api.service_account_token("prod", "payments", audiences=("api",))
        with pytest.raises(AuthenticationError, match="audiences"):
            reviewer.authenticate(wrong_audience)
        config = write(tmp_path / "c.yaml", REVIEWS_YAML)
        with ControlPlane(config, ca=ca, token_authenticators=[reviewer]) as cp:
            assert cp.tokens is None
            agent = CertificateAgent(cp.address, PAYMENTS, tmp_path / "certs", token=good)
            assert ca.verify(agent.rotate_now().cert_pem) == PAYMENTS
            api.revoke_token(good)
            with pytest.raises(AgentError, match="not authenticated by the API server"):
                agent.rotate_now()
        assert ("create", "/apis/authentication.k8s.io/v1/tokenreviews", {}) in api.requests


# -- SDS over ADS ---------------------------------------------------------------------------


def _envoy_node(namespace: str = "prod", account: str = "payments") -> base_pb2.Node:
    node = base_pb2.Node(id="anything")
    node.metadata.CopyFrom(
        struct_pb2.Struct(
            fields={
                "NAMESPACE": struct_pb2.Value(string_value=namespace),
                "SERVICE_ACCOUNT": struct_pb2.Value(string_value=account),
            }
        )
    )
    return node


def served_secrets(
    address: str,
    *,
    token: str | None = None,
    creds: grpc.ChannelCredentials | None = None,
    node: base_pb2.Node | None = None,
) -> dict[str, secret_pb2.Secret]:
    """Secrets ``default`` and ``ROOTCA`` as one ADS stream is served them."""
    if creds is None:
        channel = grpc.insecure_channel(address)
    else:
        options = [("grpc.ssl_target_name_override", "istiod.istio-system.svc")]
        channel = grpc.secure_channel(address, creds, options)
    request = discovery_pb2.DiscoveryRequest(
        node=node or _envoy_node(), type_url=SECRET_TYPE, resource_names=["default", "ROOTCA"]
    )
    requests: queue.Queue[discovery_pb2.DiscoveryRequest | None] = queue.Queue()
    requests.put(request)
    metadata = [("authorization", f"Bearer {token}")] if token else []
    with channel:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        call = stub.StreamAggregatedResources(
            iter(requests.get, None), metadata=metadata, timeout=10
        )
        response = next(call)
        call.cancel()
    out = {}
    for res in response.resources:
        secret = secret_pb2.Secret()
        res.Unpack(secret)
        out[secret.name] = secret
    return out


def test_anonymous_sds_gets_no_private_key(
    cp: ControlPlane, caplog: pytest.LogCaptureFixture
) -> None:
    got = served_secrets(cp.address)
    assert set(got) == {"ROOTCA"}, "an anonymous stream got a workload secret"
    assert "SDS secrets withheld: an unauthenticated stream claims " + PAYMENTS in caplog.text
    assert cp.nacks() == []


def test_sds_for_the_authenticated_identity_only(
    cp: ControlPlane, ca: CertificateAuthority
) -> None:
    assert cp.tokens is not None and cp.secure_address is not None
    got = served_secrets(cp.address, token=cp.tokens.issue(PAYMENTS))
    assert set(got) == {"default", "ROOTCA"}
    assert ca.verify(got["default"].tls_certificate.certificate_chain.inline_bytes) == PAYMENTS
    # A token for another identity: the node's claim is not believed.
    assert set(served_secrets(cp.address, token=cp.tokens.issue(REVIEWS))) == {"ROOTCA"}
    # mTLS on the secure port, with the matching and a mismatching certificate.
    held = ca.issue(PAYMENTS)
    creds = grpc.ssl_channel_credentials(ca.root_pem, held.key_pem, held.cert_pem)
    assert set(served_secrets(cp.secure_address, creds=creds)) == {"default", "ROOTCA"}
    other = ca.issue(REVIEWS)
    creds = grpc.ssl_channel_credentials(ca.root_pem, other.key_pem, other.cert_pem)
    assert set(served_secrets(cp.secure_address, creds=creds)) == {"ROOTCA"}
