"""mTLS through the httpx transports: the cluster's UpstreamTlsContext (as istiod sends for
ISTIO_MUTUAL) with certificates from the bootstrap's file_watcher provider, against
uvicorn (HTTP/1.1) and hypercorn (h2 over TLS) with certificates from the project's CA."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from meshlib.integrations.asgi import MeshMiddleware
from meshlib.integrations.tls import mesh_server_context
from meshlib.integrations.uvicorn import MeshH11Protocol

from meshlib import Mesh
from meshlib.controlplane.ca._authority import spiffe_id
from meshlib.httpx import UpstreamTlsConfigError
from meshlib.security import FileWatcherProvider
from tests.httpx.mesh_xds import (
    CLIENT_ID,
    RETRY_ALL,
    SERVER_ID,
    Pki,
    Upstream,
    make_pki,
    mesh_resources,
    mtls_socket,
    providers,
    serving,
)
from tests.httpx.servers import EchoApp, HypercornThread, hypercorn_tls
from tests.support import UvicornThread

HOST = "secure.test"
KINDS = ["sync", "async"]


def tls_uvicorn(pki: Pki, app: EchoApp) -> UvicornThread:
    files = pki.server
    identity = FileWatcherProvider(
        certificate_file=files.cert_chain,
        private_key_file=files.key,
        ca_certificate_file=files.root_cert,
        refresh_interval=0.0,  # look at the files on every handshake
    )
    return UvicornThread(
        MeshMiddleware(app),
        http=MeshH11Protocol,
        ssl_context_factory=lambda config, default: mesh_server_context(identity, mode="STRICT"),
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    app, h2_app = EchoApp("tls"), EchoApp("tls-h2")
    with tls_uvicorn(pki, app) as tls, HypercornThread(h2_app, **hypercorn_tls(pki.server)) as h2:
        ratings = spiffe_id("default", "ratings")
        clusters = {
            "tls": Upstream([tls.port], tls=mtls_socket()),
            "tls-h2": Upstream([h2.port], tls=mtls_socket(), http2=True),
            "wrong-id": Upstream([tls.port], tls=mtls_socket([ratings])),
            "plaintext": Upstream([tls.port]),
            "no-provider": Upstream([tls.port], tls=mtls_socket(instance="missing")),
        }
        routes = [
            ("/h2/", "tls-h2", {}),
            ("/wrong/", "wrong-id", {}),
            ("/plain/", "plaintext", {}),
            ("/noprov/", "no-provider", {}),
            ("/", "tls", {"retry_policy": RETRY_ALL}),
        ]
        res = mesh_resources(HOST, clusters, routes)
        with (
            serving(tmp_path_factory.mktemp("cp"), res) as served,
            served.mesh(providers(pki.client, refresh="0.001s"), local_replies="raise") as mesh,
        ):
            yield {"mesh": mesh, "pki": pki, "served": served}


def send(kind: str, mesh: Mesh, path: str) -> httpx.Response:
    url = f"http://{HOST}{path}"
    if kind == "sync":
        with mesh.httpx_client(timeout=5) as client:
            return client.get(url)

    async def go() -> httpx.Response:
        async with mesh.httpx_async_client(timeout=5) as client:
            return await client.get(url)

    return asyncio.run(go())


@pytest.mark.parametrize("kind", KINDS)
def test_mtls_carries_the_clients_identity(kind: str, world: dict[str, Any]) -> None:
    body = send(kind, world["mesh"], "/whoami").json()
    assert body["backend"] == "tls" and body["peer"] == CLIENT_ID
    assert body["headers"]["host"] == HOST  # the app's Host, over TLS to the endpoint


@pytest.mark.parametrize("kind", KINDS)
def test_mtls_over_http2(kind: str, world: dict[str, Any]) -> None:
    body = send(kind, world["mesh"], "/h2/echo").json()
    assert body["backend"] == "tls-h2" and body["http_version"] == "2"


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_spiffe_identity_is_rejected(kind: str, world: dict[str, Any]) -> None:
    with pytest.raises(httpx.ConnectError) as info:
        send(kind, world["mesh"], "/wrong/echo")
    assert "peer identity not allowed" in str(info.value)


@pytest.mark.parametrize("kind", KINDS)
def test_plaintext_to_a_tls_only_backend_is_rejected(kind: str, world: dict[str, Any]) -> None:
    with pytest.raises(httpx.TransportError):
        send(kind, world["mesh"], "/plain/echo")


def test_a_missing_certificate_provider_fails_clearly(world: dict[str, Any]) -> None:
    with pytest.raises(UpstreamTlsConfigError) as info:
        send("sync", world["mesh"], "/noprov/echo")
    assert isinstance(info.value, httpx.TransportError)
    assert info.value.cluster == "no-provider" and info.value.reason == "tls_config"
    assert "'missing'" in str(info.value) and "no-provider" in str(info.value)


def test_rotation_during_load_fails_nothing(world: dict[str, Any]) -> None:
    pki: Pki = world["pki"]
    mesh: Mesh = world["mesh"]
    # No keep-alive: every request is a new handshake with whatever files are current.
    limits = httpx.Limits(max_keepalive_connections=0)
    stop = threading.Event()
    serials: set[int] = set()
    failures: list[BaseException] = []
    done = [0]

    def load(client: httpx.Client) -> None:
        for _ in range(400):  # bounded
            if stop.is_set():
                return
            try:
                with client.stream("GET", f"http://{HOST}/whoami") as r:
                    stream = r.extensions["network_stream"]
                    cert = stream.get_extra_info("ssl_object").getpeercert()
                    serials.add(int(cert["serialNumber"], 16))
                    r.read()
                assert r.json()["peer"] == CLIENT_ID
                done[0] += 1
            except BaseException as exc:
                failures.append(exc)

    with (
        mesh.httpx_client(timeout=5, limits=limits) as client,
        mesh.httpx_client(timeout=10) as streaming,
        ThreadPoolExecutor(4) as pool,
    ):
        # a long download in flight across the rotations must complete
        with streaming.stream("GET", f"http://{HOST}/stream/300") as long_running:
            workers = [pool.submit(load, client) for _ in range(3)]
            for _ in range(4):
                pki.ca.write_workload_files(CLIENT_ID, pki.client.cert_chain.parent)
                pki.ca.write_workload_files(SERVER_ID, pki.server.cert_chain.parent)
                stop.wait(0.15)
            lines = list(long_running.iter_lines())
        stop.set()
        for w in workers:
            w.result()
    assert lines == [str(i) for i in range(300)]
    assert not failures, failures[:3]
    assert done[0] > 0 and len(serials) > 1  # the server's new certificates were used
