"""Mesh mTLS on real servers with certificates from the project's own CA."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from flask import Flask, jsonify
from meshlib.integrations.asgi import MeshMiddleware
from meshlib.integrations.flask import MeshFlask
from meshlib.integrations.tls import mesh_server_context
from meshlib.integrations.uvicorn import MeshH11Protocol
from werkzeug.serving import make_server

from meshlib.context import current_request
from meshlib.controlplane import CertificateAuthority
from meshlib.controlplane.ca._authority import spiffe_id
from meshlib.security import FileWatcherProvider, SanMatcher, client_context
from tests.support import UvicornThread

REVIEWS = spiffe_id("default", "reviews")
PRODUCTPAGE = spiffe_id("default", "productpage")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority(base / "ca")
    server = ca.write_workload_files(REVIEWS, base / "reviews")
    client = ca.write_workload_files(PRODUCTPAGE, base / "productpage")
    return {"ca": ca, "server": server, "client": client, "base": base}


def provider(files: Any, refresh: float = 600.0) -> FileWatcherProvider:
    return FileWatcherProvider(
        certificate_file=files.cert_chain,
        private_key_file=files.key,
        ca_certificate_file=files.root_cert,
        refresh_interval=refresh,
    )


def whoami_app() -> FastAPI:
    app = FastAPI()

    @app.get("/whoami")
    async def whoami() -> dict[str, str | None]:
        ctx = current_request()
        return {"peer": ctx.peer_identity if ctx else None}

    app.add_middleware(MeshMiddleware)
    return app


@pytest.fixture
def tls_server(pki: dict[str, Any], request: pytest.FixtureRequest) -> Iterator[UvicornThread]:
    mode = getattr(request, "param", "STRICT")
    server_provider = provider(pki["server"], refresh=0.0)
    with UvicornThread(
        whoami_app(),
        http=MeshH11Protocol,
        ssl_context_factory=lambda config, default: mesh_server_context(server_provider, mode=mode),
    ) as server:
        yield server


def test_mutual_tls_shows_the_callers_spiffe_id(
    pki: dict[str, Any], tls_server: UvicornThread
) -> None:
    me = provider(pki["client"])
    ctx = client_context(me, me, [SanMatcher("exact", REVIEWS)])
    with httpx.Client(verify=ctx) as client:
        r = client.get(f"https://127.0.0.1:{tls_server.port}/whoami")
    assert r.status_code == 200 and r.json() == {"peer": PRODUCTPAGE}


def test_strict_refuses_a_caller_without_a_certificate(
    pki: dict[str, Any], tls_server: UvicornThread
) -> None:
    roots_only = FileWatcherProvider(ca_certificate_file=pki["client"].root_cert)
    with (
        httpx.Client(verify=client_context(None, roots_only)) as client,
        pytest.raises(httpx.TransportError),
    ):
        client.get(f"https://127.0.0.1:{tls_server.port}/whoami")


@pytest.mark.parametrize("tls_server", ["PERMISSIVE"], indirect=True)
def test_permissive_accepts_a_caller_without_a_certificate(
    pki: dict[str, Any], tls_server: UvicornThread
) -> None:
    roots_only = FileWatcherProvider(ca_certificate_file=pki["client"].root_cert)
    with httpx.Client(verify=client_context(None, roots_only)) as client:
        r = client.get(f"https://127.0.0.1:{tls_server.port}/whoami")
    assert r.json() == {"peer": None}


def test_wrong_server_identity_is_rejected(pki: dict[str, Any], tls_server: UvicornThread) -> None:
    me = provider(pki["client"])
    ctx = client_context(me, me, [SanMatcher("exact", spiffe_id("default", "ratings"))])
    with httpx.Client(verify=ctx) as client, pytest.raises(httpx.ConnectError) as info:
        client.get(f"https://127.0.0.1:{tls_server.port}/whoami")
    assert "peer identity not allowed" in str(info.value)
    assert REVIEWS in str(info.value)


def test_plaintext_to_a_tls_only_server_is_rejected(tls_server: UvicornThread) -> None:
    with httpx.Client() as client, pytest.raises(httpx.TransportError):
        client.get(f"http://127.0.0.1:{tls_server.port}/whoami")


def test_rotation_takes_effect_without_restart(
    pki: dict[str, Any], tls_server: UvicornThread
) -> None:
    me = provider(pki["client"])

    def serial() -> int:
        ctx = client_context(me, me, [SanMatcher("exact", REVIEWS)])
        url = f"https://127.0.0.1:{tls_server.port}/whoami"
        with httpx.Client(verify=ctx) as c, c.stream("GET", url) as r:
            ssl_object = r.extensions["network_stream"].get_extra_info("ssl_object")
            return int(ssl_object.getpeercert()["serialNumber"], 16)

    before = serial()
    pki["ca"].write_workload_files(REVIEWS, pki["server"].cert_chain.parent)
    after = serial()
    assert before != after


def test_flask_sees_the_callers_identity_over_mtls(pki: dict[str, Any]) -> None:
    app = Flask("reviews")
    MeshFlask(app)

    @app.get("/whoami")
    def whoami() -> Any:
        ctx = current_request()
        return jsonify(peer=ctx.peer_identity if ctx else None)

    ssl_ctx = mesh_server_context(provider(pki["server"]), mode="STRICT")
    server = make_server("127.0.0.1", 0, app, threaded=True, ssl_context=ssl_ctx)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        me = provider(pki["client"])
        with httpx.Client(verify=client_context(me, me, [SanMatcher("exact", REVIEWS)])) as c:
            r = c.get(f"https://127.0.0.1:{server.server_port}/whoami")
    finally:
        server.shutdown()
    assert r.json() == {"peer": PRODUCTPAGE}


def test_file_watcher_notices_new_files(tmp_path: Path, pki: dict[str, Any]) -> None:
    files = pki["ca"].write_workload_files(REVIEWS, tmp_path)
    p = provider(files, refresh=3600)
    first = p.current()
    pki["ca"].write_workload_files(REVIEWS, tmp_path)
    assert p.current() is first  # not re-checked before refresh_interval
    assert p.refresh_now().version == first.version + 1
