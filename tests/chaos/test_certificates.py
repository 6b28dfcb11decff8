"""Certificates under load: rotation by CSR (the client's agent) and by the CA's rotator
(the server) fails nothing; refusals (wrong SPIFFE ID, another CA, expired, plaintext,
no client certificate, anonymous SDS) refuse every time."""

from __future__ import annotations

import datetime as dt
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from meshlib.integrations.asgi import MeshMiddleware
from meshlib.integrations.tls import mesh_server_context
from meshlib.integrations.uvicorn import MeshH11Protocol

from meshlib import Mesh
from meshlib.controlplane import CertificateAuthority, ControlPlane, WorkloadCertRotator
from meshlib.controlplane.ca._authority import spiffe_id
from meshlib.controlplane.xds._cache import VersionedSnapshotCache
from meshlib.security import CertificateAgent, FileWatcherProvider
from tests.controlplane.conftest import REVIEWS_YAML
from tests.controlplane.test_ca_service import served_secrets
from tests.httpx.mesh_xds import (
    CLIENT_ID,
    SERVER_ID,
    Upstream,
    make_pki,
    mesh_resources,
    mtls_socket,
    providers,
)
from tests.httpx.servers import EchoApp
from tests.support import UvicornThread

from .load import Figures, Load, echo_ok

pytestmark = pytest.mark.chaos
HOST = "certs.test"
# A handshake per request on a busy 2-core machine: a 1 s connect timeout is a load test.
SLOW_MACHINE = {"connect_timeout": "10s"}


def tls_server(app: EchoApp, cert: Path, key: Path, root: Path) -> UvicornThread:
    return UvicornThread(
        app,
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
        ssl_ca_certs=str(root),
        ssl_cert_reqs=ssl.CERT_REQUIRED,
    )


def test_rotation_by_csr_under_mtls_load(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "ca")
    server_dir, client_dir = tmp_path / "server", tmp_path / "client"
    server_rotator = WorkloadCertRotator(ca, SERVER_ID, server_dir, ttl=3, renew_fraction=0.2)
    empty = tmp_path / "empty"
    empty.mkdir()
    cache = VersionedSnapshotCache()
    with server_rotator, ControlPlane(empty, cache=cache, ca=ca) as cp:
        assert cp.tokens is not None
        agent = CertificateAgent(
            cp.address,
            CLIENT_ID,
            client_dir,
            token=cp.tokens.issue(CLIENT_ID),
            ttl=60,  # the CA's minimum; renewed every ~0.6 s
            renew_fraction=0.01,
        )
        files = server_rotator.files
        assert files is not None
        with agent, rotating_server(EchoApp("tls"), files) as s:
            res = mesh_resources(
                HOST,
                {"tls": Upstream([s.port], tls=mtls_socket(), extra=SLOW_MACHINE)},
                [("/", "tls", {})],
            )
            cache.set_resources(res)
            boot = cp.bootstrap()
            boot["certificate_providers"] = providers(agent_files(client_dir), refresh="0.05s")
            limits = httpx.Limits(max_keepalive_connections=0)  # a handshake per request
            with Mesh(boot) as mesh, mesh.httpx_client(timeout=10, limits=limits) as client:
                send = echo_ok(client, HOST)

                before = (agent.rotations, server_rotator.rotations)
                with Load("mTLS while rotating by CSR", send, max_requests=600) as load:
                    pass
                figures = load.figures
                figures.extra["client_rotations"] = agent.rotations - before[0]
                figures.extra["server_rotations"] = server_rotator.rotations - before[1]
                print(figures)
                assert figures.failed == 0, figures
                assert agent.rotations - before[0] >= 2, figures


def rotating_server(app: EchoApp, files: Any) -> UvicornThread:
    """A STRICT mTLS server reading its certificate files on every handshake."""
    identity = FileWatcherProvider(
        certificate_file=files.cert_chain,
        private_key_file=files.key,
        ca_certificate_file=files.root_cert,
        refresh_interval=0.0,
    )
    return UvicornThread(
        MeshMiddleware(app),
        http=MeshH11Protocol,
        ssl_context_factory=lambda config, default: mesh_server_context(identity, mode="STRICT"),
    )


def agent_files(directory: Path) -> Any:
    from meshlib.controlplane import WorkloadFiles

    return WorkloadFiles(
        directory / "cert-chain.pem", directory / "key.pem", directory / "root-cert.pem"
    )


# -- refusals -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def refusal_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("refusals")
    pki = make_pki(base)
    other = CertificateAuthority(base / "other-ca")
    foreign = other.write_workload_files(SERVER_ID, base / "foreign")
    expiring = pki.ca.issue(SERVER_ID, ttl=1)
    expired_dir = base / "expired"
    pki.ca.write_certificate(expiring, expired_dir)
    root = pki.server.root_cert
    ok = tls_server(EchoApp("ok"), pki.server.cert_chain, pki.server.key, root).start()
    bad_root = tls_server(EchoApp("foreign"), foreign.cert_chain, foreign.key, root).start()
    late = tls_server(
        EchoApp("expired"), expired_dir / "cert-chain.pem", expired_dir / "key.pem", root
    ).start()
    wait = (expiring.not_after - dt.datetime.now(dt.UTC)).total_seconds()
    time.sleep(max(0.0, wait) + 0.2)  # now it has expired
    ratings = spiffe_id("default", "ratings")
    clusters = {
        "ok": Upstream([ok.port], tls=mtls_socket()),
        "wrong-id": Upstream([ok.port], tls=mtls_socket([ratings])),
        "other-ca": Upstream([bad_root.port], tls=mtls_socket()),
        "expired": Upstream([late.port], tls=mtls_socket()),
        "plaintext": Upstream([ok.port]),
    }
    routes = [(f"/{name}/", name, {}) for name in clusters]
    empty = base / "empty"
    empty.mkdir()
    cache = VersionedSnapshotCache()
    try:
        with ControlPlane(empty, cache=cache, ca=pki.ca) as cp:
            cache.set_resources(mesh_resources(HOST, clusters, routes))  # after start's load
            boot = cp.bootstrap()
            boot["certificate_providers"] = providers(pki.client)
            with Mesh(boot) as mesh, mesh.httpx_client(timeout=5) as client:
                yield {"client": client, "cp": cp, "pki": pki, "other": other, "ok": ok}
    finally:
        for s in (ok, bad_root, late):
            s.stop()


def refused_every_time(name: str, send: Any, n: int = 200) -> Figures:
    """``send(i)`` must be refused every time (a transport error, or the mesh's own 503
    local reply); an upstream answer counts as a failure."""
    accepted: list[int] = []

    def attempt(i: int) -> bool:
        try:
            response = send(i)
        except httpx.TransportError:
            return True
        # the default local reply: Envoy's 503 for a connection the mesh refused
        if response.status_code == 503 and "meshlib.local_reply" in response.extensions:
            return True
        accepted.append(i)
        return False

    with Load(f"refused: {name}", attempt, max_requests=n) as load:
        pass
    load.figures.extra["accepted"] = len(accepted)
    return load.figures


@pytest.mark.parametrize("case", ["wrong-id", "other-ca", "expired", "plaintext"])
def test_outbound_refusals(refusal_world: dict[str, Any], case: str) -> None:
    client: httpx.Client = refusal_world["client"]
    assert client.get(f"http://{HOST}/ok/echo").status_code == 200  # the control case
    figures = refused_every_time(case, lambda i: client.get(f"http://{HOST}/{case}/{i}"))
    assert figures.failed == 0 and figures.sent == 200, figures


@pytest.mark.parametrize("case", ["no client certificate", "client of another CA"])
def test_inbound_refusals(refusal_world: dict[str, Any], case: str, tmp_path: Path) -> None:
    pki = refusal_world["pki"]
    ctx = ssl.create_default_context(cafile=str(pki.server.root_cert))
    ctx.check_hostname = False
    if case == "client of another CA":
        files = refusal_world["other"].write_workload_files(CLIENT_ID, tmp_path / "c")
        ctx.load_cert_chain(files.cert_chain, files.key)
    url = f"https://127.0.0.1:{refusal_world['ok'].port}/echo"
    with httpx.Client(verify=ctx, timeout=5) as raw:
        figures = refused_every_time(case, lambda i: raw.get(url).raise_for_status(), n=100)
    assert figures.failed == 0, figures


def test_anonymous_sds_never_gets_a_key(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "ca")
    config = tmp_path / "c.yaml"
    config.write_text(REVIEWS_YAML)
    with ControlPlane(config, ca=ca) as cp:
        assert cp.tokens is not None
        token = cp.tokens.issue(spiffe_id("prod", "payments"))
        assert set(served_secrets(cp.address, token=token)) == {"default", "ROOTCA"}  # control
        got: list[set[str]] = []

        def ask(i: int) -> bool:
            names = set(served_secrets(cp.address))
            got.append(names)
            return names == {"ROOTCA"}

        with Load("refused: anonymous SDS streams", ask, threads=2, max_requests=50) as load:
            pass
    assert load.figures.failed == 0 and len(got) == 50, load.figures
