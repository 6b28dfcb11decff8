"""RequestAuthentication and AuthorizationPolicy ``requestPrincipals`` / ``request.auth``
conditions, end to end: YAML read by the embedded control plane, translated to the server
listener's ``jwt_authn`` and RBAC filters, enforced by ``MeshInbound`` in front of a FastAPI
app on a real uvicorn server and a Flask app on werkzeug, keys from a JWKS server on
127.0.0.1. No JWT code in the apps."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from fastapi import FastAPI, Request
from flask import Flask
from flask import request as flask_request
from meshlib.integrations._inbound import InboundRequest
from meshlib.integrations._inbound_jwt import JWT_METADATA, JwtCheck
from meshlib.integrations._server_listener import MeshInbound
from meshlib.integrations.asgi import MeshMiddleware
from meshlib.integrations.grpc_server import MeshServerInterceptor
from meshlib.integrations.jwt_auth import current_jwt
from meshlib.integrations.wsgi import MeshWSGIMiddleware
from werkzeug.serving import make_server

from meshlib import Mesh
from meshlib.cli import build_bootstrap
from meshlib.controlplane import CertificateAuthority, ControlPlane
from meshlib.controlplane.ca._authority import spiffe_id
from tests.integrations.test_jwt_auth import ISSUER, JwksServer, Keys
from tests.support import UvicornThread, service_objects
from xds_client.resources._jwt_authn import JwtAuthnConfig, JwtProviderConfig

pytestmark = pytest.mark.timeout(60)


def policies(jwks_url: str) -> list[dict[str, Any]]:
    selector = {"matchLabels": {"app": "reviews"}}
    return [
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "RequestAuthentication",
            "metadata": {"name": "jwt", "namespace": "default"},
            "spec": {
                "selector": selector,
                "jwtRules": [
                    {
                        "issuer": ISSUER,
                        "audiences": ["bookinfo"],
                        "jwksUri": f"{jwks_url}/jwks",
                        "outputPayloadToHeader": "x-jwt-payload",
                        "outputClaimToHeaders": [{"header": "x-jwt-group", "claim": "group"}],
                    }
                ],
            },
        },
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "users", "namespace": "default"},
            "spec": {
                "selector": selector,
                "rules": [
                    {
                        "from": [{"source": {"requestPrincipals": [f"{ISSUER}/*"]}}],
                        "to": [{"operation": {"paths": ["/users/*"]}}],
                        "when": [{"key": "request.auth.claims[group]", "values": ["readers"]}],
                    },
                    {
                        "from": [{"source": {"requestPrincipals": [f"{ISSUER}/alice"]}}],
                        "to": [{"operation": {"paths": ["/alice"]}}],
                    },
                    {
                        "from": [{"source": {"notRequestPrincipals": ["*"]}}],
                        "to": [{"operation": {"paths": ["/public"]}}],
                    },
                ],
            },
        },
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


def seen(headers: Any) -> dict[str, Any]:
    """What the app sees: the principal and the headers jwt_authn changes."""
    result = current_jwt()
    return {
        "principal": result.principal if result else None,
        "authorization": headers.get("authorization"),
        "payload": headers.get("x-jwt-payload"),
        "group": headers.get("x-jwt-group"),
    }


def asgi_app(inbound: MeshInbound) -> FastAPI:
    app = FastAPI()

    @app.get("/{path:path}")
    async def handler(path: str, request: Request) -> dict[str, Any]:
        return seen(request.headers)

    app.add_middleware(MeshMiddleware, inbound=inbound)
    return app


def wsgi_app(inbound: MeshInbound) -> Flask:
    app = Flask("reviews")

    @app.get("/<path:path>")
    def handler(path: str) -> dict[str, Any]:
        return seen(flask_request.headers)

    app.wsgi_app = MeshWSGIMiddleware(app.wsgi_app, inbound)  # type: ignore[method-assign]
    return app


@contextmanager
def serve(kind: str, app: Any, port: int) -> Iterator[int]:
    if kind == "asgi":
        with UvicornThread(app, port=port) as server:
            yield server.port
        return
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def mesh_inbound(tmp_path: Path, keys: Keys) -> Iterator[tuple[MeshInbound, int, JwksServer]]:
    """The embedded control plane reading the policies, and the workload's MeshInbound."""
    ca = CertificateAuthority(tmp_path / "ca")
    ca.write_workload_files(spiffe_id("default", "reviews"), tmp_path / "reviews")
    jwks = JwksServer(keys)
    port = free_port()
    objects = service_objects("reviews", 9080, [("127.0.0.1", port)])
    for obj in objects:
        if obj["kind"] == "EndpointSlice":
            obj["metadata"]["labels"]["app"] = "reviews"
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "mesh.yaml").write_text(yaml.safe_dump_all(objects + policies(jwks.url)))
    try:
        with ControlPlane(tmp_path / "config") as cp:
            bootstrap = build_bootstrap(
                xds=cp.address,
                pod="reviews-v1",
                namespace="default",
                cert_dir=str(tmp_path / "reviews"),
            )
            with Mesh(bootstrap=bootstrap) as mesh:
                inbound = MeshInbound.for_mesh(mesh, port)
                assert inbound.wait_until_serving().serving
                try:
                    yield inbound, port, jwks
                finally:
                    inbound.close()
    finally:
        jwks.close()


@pytest.fixture(params=["asgi", "wsgi"])
def world(request: Any, tmp_path: Path, keys: Keys) -> Iterator[dict[str, Any]]:
    with mesh_inbound(tmp_path, keys) as (inbound, port, jwks):
        app = asgi_app(inbound) if request.param == "asgi" else wsgi_app(inbound)
        with serve(request.param, app, port) as bound:
            yield {"url": f"http://127.0.0.1:{bound}", "inbound": inbound, "jwks": jwks}


def get(world: dict[str, Any], path: str, token: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.get(world["url"] + path, headers=headers, timeout=10)


def test_listener_carries_jwt_authn_before_rbac(world: dict[str, Any]) -> None:
    (chain,) = world["inbound"].state.chains
    names = [f.name for f in chain.chain.http.http_filters]
    assert names[0] == "envoy.filters.http.jwt_authn"
    assert names[1:] == ["envoy.filters.http.rbac.allow", "envoy.filters.http.router"]
    assert chain.jwt is not None and chain.jwt.allow_missing


def test_keys_are_fetched_before_the_first_request(world: dict[str, Any]) -> None:
    for _ in range(200):  # bounded: the prefetch thread started with the listener
        if world["jwks"].fetches:
            break
        time.sleep(0.05)
    assert world["jwks"].fetches == 1


def test_valid_token_allowed_with_claims_and_headers(world: dict[str, Any], keys: Keys) -> None:
    r = get(world, "/users/1", keys.token(group="readers"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["principal"] == f"{ISSUER}/alice"
    assert body["authorization"] is None  # forwardOriginalToken false: the token is removed
    assert body["group"] == "readers"
    payload = json.loads(base64.urlsafe_b64decode(body["payload"] + "=="))
    assert payload["sub"] == "alice"


def test_claim_in_a_list_matches(world: dict[str, Any], keys: Keys) -> None:
    assert get(world, "/users/1", keys.token(group=["x", "readers"])).status_code == 200


def test_claim_mismatch_is_403(world: dict[str, Any], keys: Keys) -> None:
    r = get(world, "/users/1", keys.token(group="writers"))
    assert (r.status_code, r.text) == (403, "RBAC: access denied")


def test_request_principal_exact(world: dict[str, Any], keys: Keys) -> None:
    assert get(world, "/alice", keys.token()).status_code == 200
    assert get(world, "/alice", keys.token(sub="bob")).status_code == 403


def test_wrong_issuer_is_401(world: dict[str, Any], keys: Keys) -> None:
    r = get(world, "/users/1", keys.token(iss="https://other.example", group="readers"))
    assert r.status_code == 401
    assert r.text == "Jwt issuer is not configured"
    assert r.headers["www-authenticate"].startswith('Bearer realm="http://127.0.0.1:')


def test_bad_audience_and_signature_are_401(world: dict[str, Any], keys: Keys) -> None:
    assert get(world, "/users/1", keys.token(aud="other", group="readers")).status_code == 401
    forged = keys.token(sign_with="k2", group="readers")
    assert get(world, "/users/1", forged).status_code == 401


def test_missing_token_passes_to_authorization(world: dict[str, Any]) -> None:
    r = get(world, "/users/1")
    assert (r.status_code, r.text) == (403, "RBAC: access denied")
    public = get(world, "/public")  # notRequestPrincipals ["*"]: only without a token
    assert public.status_code == 200 and public.json()["principal"] is None


def test_not_request_principals_refuses_authenticated(world: dict[str, Any], keys: Keys) -> None:
    assert get(world, "/public", keys.token()).status_code == 403


def test_grpc_server_behind_mesh_inbound(tmp_path: Path, keys: Keys) -> None:
    def whoami(request: bytes, context: Any) -> bytes:
        result = current_jwt()
        return (result.principal or "anonymous").encode() if result else b"none"

    with mesh_inbound(tmp_path, keys) as (inbound, port, _):
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4),
            interceptors=[MeshServerInterceptor(inbound)],
        )
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "users", {"Get": grpc.unary_unary_rpc_method_handler(whoami)}
                ),
            )
        )
        server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = channel.unary_unary("/users/Get")

                def metadata(**claims: Any) -> list[tuple[str, str]]:
                    return [("authorization", f"Bearer {keys.token(**claims)}")]

                assert call(b"", metadata=metadata(group="readers"), timeout=10) == (
                    f"{ISSUER}/alice".encode()
                )
                for md, code in (
                    (metadata(group="writers"), grpc.StatusCode.PERMISSION_DENIED),
                    (metadata(aud="x", group="readers"), grpc.StatusCode.UNAUTHENTICATED),
                    ([], grpc.StatusCode.PERMISSION_DENIED),
                ):
                    with pytest.raises(grpc.RpcError) as info:
                        call(b"", metadata=md, timeout=10)
                    assert info.value.code() == code, md
        finally:
            server.stop(0)


def test_without_allow_missing_a_missing_token_is_401(keys: Keys) -> None:
    jwks = json.dumps({"keys": [keys.jwk("k1")]})
    config = JwtAuthnConfig(
        (JwtProviderConfig("origins-0", ISSUER, jwks=jwks, payload_in_metadata=ISSUER),), False
    )
    check = JwtCheck(config)

    def outcome(method: str = "GET", **headers: str) -> Any:
        return check.check(InboundRequest(method, "/x?a=1", headers, host="h"))

    missing = outcome().reply
    assert missing is not None and (missing.status, missing.body) == (401, b"Jwt is missing")
    assert outcome("OPTIONS", origin="o", **{"access-control-request-method": "GET"}).reply is None
    ok = outcome(authorization=f"Bearer {keys.token()}")
    assert ok.reply is None and ok.metadata[JWT_METADATA][ISSUER]["sub"] == "alice"
