"""Serving with mesh mTLS: client certificates required, the caller's SPIFFE ID from the
verified certificate, RBAC (AuthorizationPolicy-style ALLOW) on it, rotation-ready
credentials from a file_watcher provider. Certificates come from a throwaway CA."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter_pb2
from envoy.type.matcher.v3 import path_pb2, string_pb2
from meshlib.integrations._inbound import Inbound
from meshlib.integrations._rbac import RbacAuthorizer, compile_rbac
from meshlib.integrations.grpc_server import MeshServerInterceptor, mesh_server_credentials

from meshlib.security import FileWatcherProvider

from .support import EchoLogic, sync_handlers

PRODUCTPAGE = "spiffe://cluster.local/ns/default/sa/productpage"
REVIEWS = "spiffe://cluster.local/ns/default/sa/reviews"
NOW = dt.datetime.now(dt.UTC)


class CA:
    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test root")])
        self.cert = self._sign(self.name, self.key.public_key(), ca=True)
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def _sign(
        self,
        subject: x509.Name,
        public: object,
        *,
        ca: bool = False,
        sans: list[x509.GeneralName] | None = None,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.name)
            .public_key(public)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(hours=1))
            .not_valid_after(NOW + dt.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=True)
        return builder.sign(self.key, hashes.SHA256())

    def leaf(self, *sans: x509.GeneralName) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._sign(x509.Name([]), key.public_key(), sans=list(sans))
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cert.public_bytes(serialization.Encoding.PEM), key_pem


def allow_productpage() -> RbacAuthorizer:
    principal = rbac_pb2.Principal(
        authenticated=rbac_pb2.Principal.Authenticated(
            principal_name=string_pb2.StringMatcher(exact=PRODUCTPAGE)
        )
    )
    permission = rbac_pb2.Permission(
        url_path=path_pb2.PathMatcher(path=string_pb2.StringMatcher(prefix="/test.Echo/"))
    )
    policy = rbac_pb2.Policy(permissions=[permission], principals=[principal])
    config = rbac_filter_pb2.RBAC(
        rules=rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW, policies={"productpage": policy})
    )
    compiled = compile_rbac("allow", config)
    assert compiled is not None
    return RbacAuthorizer([compiled])


@pytest.fixture
def ca() -> CA:
    return CA()


@pytest.fixture
def server(ca: CA, tmp_path: Path) -> Iterator[tuple[int, EchoLogic]]:
    # grpcio clients check the server's name, so the server certificate also has a DNS SAN
    cert, key = ca.leaf(
        x509.DNSName("echo.default.svc"),
        x509.UniformResourceIdentifier("spiffe://cluster.local/ns/default/sa/echo"),
    )
    for name, data in (("cert.pem", cert), ("key.pem", key), ("root.pem", ca.pem)):
        (tmp_path / name).write_bytes(data)
    provider = FileWatcherProvider(
        certificate_file=tmp_path / "cert.pem",
        private_key_file=tmp_path / "key.pem",
        ca_certificate_file=tmp_path / "root.pem",
    )
    logic = EchoLogic("s")
    inbound = Inbound(workload="echo", authorizer=allow_productpage())
    srv = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4), interceptors=[MeshServerInterceptor(inbound)]
    )
    srv.add_generic_rpc_handlers((sync_handlers(logic),))
    port = srv.add_secure_port("127.0.0.1:0", mesh_server_credentials(provider))
    srv.start()
    yield port, logic
    srv.stop(0).wait()


def call(ca: CA, port: int, identity: str | None) -> grpc.StatusCode:
    key = cert = None
    if identity is not None:
        cert, key = ca.leaf(x509.UniformResourceIdentifier(identity))
    creds = grpc.ssl_channel_credentials(ca.pem, key, cert)
    options = [("grpc.ssl_target_name_override", "echo.default.svc")]
    with grpc.secure_channel(f"127.0.0.1:{port}", creds, options) as channel:
        try:
            channel.unary_unary("/test.Echo/Echo")(b"x", timeout=5)
        except grpc.RpcError as err:
            return err.code()
    return grpc.StatusCode.OK


def test_mtls_identity_and_rbac(ca: CA, server: tuple[int, EchoLogic]) -> None:
    port, logic = server
    assert call(ca, port, PRODUCTPAGE) is grpc.StatusCode.OK
    assert call(ca, port, REVIEWS) is grpc.StatusCode.PERMISSION_DENIED  # verified, not allowed
    assert call(ca, port, None) is grpc.StatusCode.UNAVAILABLE  # no client certificate
    assert call(CA(), port, PRODUCTPAGE) is grpc.StatusCode.UNAVAILABLE  # another root
    assert logic.started == 1  # only the allowed call reached the handler
