"""The inbound side driven by the control plane: PeerAuthentication and
AuthorizationPolicy reach a FastAPI service through its server listener, enforced on a
real uvicorn server with mTLS certificates from the project's CA."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI
from meshlib.integrations._server_listener import MeshInbound
from meshlib.integrations.asgi import MeshMiddleware
from meshlib.integrations.uvicorn import MeshH11Protocol

from meshlib import Mesh
from meshlib.cli import build_bootstrap
from meshlib.context import current_request
from meshlib.controlplane import CertificateAuthority, ControlPlane
from meshlib.controlplane.ca._authority import spiffe_id
from meshlib.security import FileWatcherProvider, SanMatcher, client_context
from tests.support import UvicornThread, service_objects

REVIEWS = spiffe_id("default", "reviews")
PRODUCTPAGE = spiffe_id("default", "productpage")
RATINGS = spiffe_id("default", "ratings")

POLICIES = [
    {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "strict", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "reviews"}}, "mtls": {"mode": "STRICT"}},
    },
    {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "readers", "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"app": "reviews"}},
            "action": "ALLOW",
            "rules": [
                {
                    "from": [
                        {"source": {"principals": ["cluster.local/ns/default/sa/productpage"]}}
                    ],
                    "to": [{"operation": {"methods": ["GET"], "paths": ["/reviews/*"]}}],
                }
            ],
        },
    },
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    ca = CertificateAuthority(tmp_path / "ca")
    certs = {
        sa: ca.write_workload_files(spiffe_id("default", sa), tmp_path / sa)
        for sa in ("reviews", "productpage", "ratings")
    }
    port = free_port()
    objects = service_objects("reviews", 9080, [("127.0.0.1", port)])
    for obj in objects:
        if obj["kind"] == "EndpointSlice":
            obj["metadata"]["labels"]["app"] = "reviews"
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "mesh.yaml").write_text(yaml.safe_dump_all(objects + POLICIES))
    with ControlPlane(tmp_path / "config") as cp:
        bootstrap = build_bootstrap(
            xds=cp.address,
            pod="reviews-v1",
            namespace="default",
            cert_dir=str(tmp_path / "reviews"),
        )
        with Mesh(bootstrap=bootstrap) as mesh:
            inbound = MeshInbound.for_mesh(mesh, port, workload="reviews-v1")
            state = inbound.wait_until_serving()
            assert state.serving and state.mode == "STRICT", state
            app = FastAPI()

            @app.get("/{path:path}")
            async def handler(path: str) -> dict[str, Any]:
                ctx = current_request()
                return {"path": path, "peer": ctx.peer_identity if ctx else None}

            app.add_middleware(MeshMiddleware, inbound=inbound)
            ssl_ctx = inbound.server_ssl_context()
            with UvicornThread(
                app,
                port=port,
                http=MeshH11Protocol,
                ssl_context_factory=lambda config, default: ssl_ctx,
            ) as server:
                yield {"port": server.port, "certs": certs, "inbound": inbound}
            inbound.close()


def client_for(world: dict[str, Any], sa: str | None) -> httpx.Client:
    roots = FileWatcherProvider(ca_certificate_file=world["certs"]["reviews"].root_cert)
    identity = None
    if sa is not None:
        files = world["certs"][sa]
        identity = FileWatcherProvider(
            certificate_file=files.cert_chain, private_key_file=files.key
        )
    return httpx.Client(verify=client_context(identity, roots, [SanMatcher("exact", REVIEWS)]))


def test_allowed_principal_path_and_method(world: dict[str, Any]) -> None:
    with client_for(world, "productpage") as c:
        r = c.get(f"https://127.0.0.1:{world['port']}/reviews/1")
        denied_method = c.post(f"https://127.0.0.1:{world['port']}/reviews/1")
        denied_path = c.get(f"https://127.0.0.1:{world['port']}/admin")
    assert r.status_code == 200 and r.json()["peer"] == PRODUCTPAGE
    assert denied_method.status_code == 403 and denied_path.status_code == 403


def test_other_principal_is_denied(world: dict[str, Any]) -> None:
    with client_for(world, "ratings") as c:
        assert c.get(f"https://127.0.0.1:{world['port']}/reviews/1").status_code == 403


def test_strict_refuses_callers_without_a_certificate(world: dict[str, Any]) -> None:
    with client_for(world, None) as c, pytest.raises(httpx.TransportError):
        c.get(f"https://127.0.0.1:{world['port']}/reviews/1")
