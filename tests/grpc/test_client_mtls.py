"""Client mTLS for the gRPC channel through the in-process TLS bridge: the cluster's
UpstreamTlsContext (file_watcher provider, SPIFFE SAN matchers) is honoured, the server
sees the client's SPIFFE ID, a wrong server identity fails the call, plaintext clusters
are unchanged. Servers are real grpc servers on loopback with certificates from the
project's CA (URI-only SPIFFE IDs, which grpcio's own TLS cannot verify)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format
from meshlib.integrations.grpc_server import mesh_server_credentials, peer_identity

from meshlib import Mesh
from meshlib.controlplane import ControlPlane
from meshlib.controlplane.xds._cache import CLUSTER_TYPE
from meshlib.security import FileWatcherProvider
from tests.httpx.mesh_xds import CLIENT_ID, SERVER_ID, Pki, make_pki, mtls_socket, providers

from .support import StaticCache, route, service

pytestmark = pytest.mark.timeout(60)

TARGET = "reviews:9080"
CLUSTER = "outbound|9080||reviews"
METHOD = "/test.Who/Ask"


@dataclass
class Server:
    port: int
    seen: list[str | None]  # the caller's SPIFFE ID per call
    server: grpc.Server

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def who_server(credentials: grpc.ServerCredentials | None) -> Server:
    """A grpc server whose one method answers ``peer_identity|authority``."""
    seen: list[str | None] = []

    def ask(request: bytes, context: grpc.ServicerContext) -> bytes:
        ident = peer_identity(context)
        seen.append(ident)
        return f"{ident}|{request.decode()}".encode()

    handler = grpc.method_handlers_generic_handler(
        "test.Who", {"Ask": grpc.unary_unary_rpc_method_handler(ask)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return Server(port, seen, server)


def mesh_server(pki: Pki) -> Server:
    files = pki.server
    provider = FileWatcherProvider(
        certificate_file=files.cert_chain,
        private_key_file=files.key,
        ca_certificate_file=files.root_cert,
    )
    return who_server(mesh_server_credentials(provider))


def resources(address: str, tls: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    res = service(TARGET, [route(CLUSTER)], {CLUSTER: [address]})
    if tls is not None:
        socket = json_format.ParseDict(tls, base_pb2.TransportSocket())
        res[CLUSTER_TYPE][CLUSTER].transport_socket.CopyFrom(socket)
    return res


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


MeshMaker = Callable[[dict[str, dict[str, Any]]], Mesh]


@pytest.fixture
def make_mesh(tmp_path: Path, pki: Pki) -> Iterator[MeshMaker]:
    stack: list[Any] = []

    def make(res: dict[str, dict[str, Any]]) -> Mesh:
        (tmp_path / "empty").mkdir(exist_ok=True)
        cp = ControlPlane(tmp_path / "empty", cache=StaticCache(res)).start()
        bootstrap = cp.bootstrap()
        bootstrap["certificate_providers"] = providers(pki.client)
        mesh = Mesh(bootstrap=bootstrap, resolve_timeout=5)
        stack.extend([cp, mesh])
        return mesh

    yield make
    for item in reversed(stack):
        item.close() if isinstance(item, Mesh) else item.stop()


def ask(channel: grpc.Channel, body: bytes = b"hi", timeout: float = 5.0) -> bytes:
    fn = channel.unary_unary(METHOD)
    reply: bytes = fn(body, timeout=timeout)
    return reply


def test_mtls_success_server_sees_client_spiffe_id(pki: Pki, make_mesh: MeshMaker) -> None:
    srv = mesh_server(pki)
    try:
        mesh = make_mesh(resources(srv.address, mtls_socket([SERVER_ID])))
        with mesh.grpc_channel(f"xds:///{TARGET}") as ch:
            assert ask(ch) == f"{CLIENT_ID}|hi".encode()
            assert ask(ch, b"again") == f"{CLIENT_ID}|again".encode()
            assert ch.subchannel_addresses() == {srv.address}
        assert srv.seen == [CLIENT_ID, CLIENT_ID]
    finally:
        srv.server.stop(0).wait()


async def test_aio_channel_mtls(pki: Pki, make_mesh: MeshMaker) -> None:
    srv = mesh_server(pki)
    try:
        mesh = make_mesh(resources(srv.address, mtls_socket([SERVER_ID])))
        async with mesh.grpc_aio_channel(f"xds:///{TARGET}") as ch:
            reply = await ch.unary_unary(METHOD)(b"aio", timeout=5.0)
        assert reply == f"{CLIENT_ID}|aio".encode()
    finally:
        srv.server.stop(0).wait()


def test_wrong_server_identity_fails_the_call(pki: Pki, make_mesh: MeshMaker) -> None:
    srv = mesh_server(pki)
    wanted = "spiffe://cluster.local/ns/default/sa/not-reviews"
    try:
        mesh = make_mesh(resources(srv.address, mtls_socket([wanted])))
        with mesh.grpc_channel(f"xds:///{TARGET}") as ch, pytest.raises(grpc.RpcError) as info:
            ask(ch)
        err = info.value
        assert err.code() == grpc.StatusCode.UNAVAILABLE
        assert CLUSTER in err.details()
        assert "SAN" in err.details() and SERVER_ID in err.details()
        assert srv.seen == []  # no call reached the application
    finally:
        srv.server.stop(0).wait()


def test_unknown_certificate_provider_names_the_cluster(pki: Pki, make_mesh: MeshMaker) -> None:
    srv = mesh_server(pki)
    try:
        mesh = make_mesh(resources(srv.address, mtls_socket([SERVER_ID], instance="nope")))
        with mesh.grpc_channel(f"xds:///{TARGET}") as ch, pytest.raises(grpc.RpcError) as info:
            ask(ch)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert CLUSTER in info.value.details() and "'nope'" in info.value.details()
    finally:
        srv.server.stop(0).wait()


def test_plaintext_cluster_unchanged(make_mesh: MeshMaker) -> None:
    srv = who_server(None)
    try:
        mesh = make_mesh(resources(srv.address, None))
        with mesh.grpc_channel(f"xds:///{TARGET}") as ch:
            assert ask(ch) == b"None|hi"
        assert mesh._tls_bridge is not None and mesh._tls_bridge._loop is None  # never started
    finally:
        srv.server.stop(0).wait()


def _qps(call: Callable[[], bytes], expected: bytes, count: int) -> float:
    for _ in range(20):  # warm up: connection, handshake
        assert call() == expected
    began = time.perf_counter()
    for _ in range(count):
        assert call() == expected
    return count / (time.perf_counter() - began)


def test_measure_bridge_vs_grpc_tls(pki: Pki, make_mesh: MeshMaker, tmp_path: Path) -> None:
    """Sequential unary QPS: mesh channel over the bridge vs plain grpcio with its own
    TLS (a DNS-SAN certificate from trustme). Printed, not asserted."""
    count = 300
    srv = mesh_server(pki)
    ca = trustme.CA()
    leaf = ca.issue_cert("who.test")
    creds = grpc.ssl_server_credentials(
        [(leaf.private_key_pem.bytes(), leaf.cert_chain_pems[0].bytes())]
    )
    plain = who_server(creds)
    try:
        mesh = make_mesh(resources(srv.address, mtls_socket([SERVER_ID])))
        with mesh.grpc_channel(f"xds:///{TARGET}") as ch:
            fn = ch.unary_unary(METHOD)
            bridged = _qps(lambda: fn(b"q", timeout=5.0), f"{CLIENT_ID}|q".encode(), count)
        client = grpc.secure_channel(
            plain.address,
            grpc.ssl_channel_credentials(ca.cert_pem.bytes()),
            [("grpc.ssl_target_name_override", "who.test")],
        )
        with client:
            direct_fn = client.unary_unary(METHOD)
            direct = _qps(lambda: direct_fn(b"q", timeout=5.0), b"None|q", count)
        print(
            f"\nunary sequential QPS: bridge {bridged:.0f}, grpcio TLS {direct:.0f}, "
            f"ratio {bridged / direct:.2f}"
        )
    finally:
        srv.server.stop(0).wait()
        plain.server.stop(0).wait()
