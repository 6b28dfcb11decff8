"""RequestAuthentication JWT rules on real servers: a JWKS server on 127.0.0.1 (keys
rotated while serving), uvicorn (ASGI), werkzeug (WSGI) and grpc servers. Valid tokens
give the app ``iss/sub``; expired, wrong issuer, wrong audience and bad signatures are
401 / UNAUTHENTICATED; a missing token passes unauthenticated."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from meshlib.integrations.jwt_auth import (
    JwtAioServerInterceptor,
    JwtAuthenticator,
    JwtConfigError,
    JwtMiddleware,
    JwtRule,
    JwtServerInterceptor,
    JwtWSGIMiddleware,
    current_jwt,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from werkzeug.serving import make_server

from tests.support import UvicornThread

pytestmark = pytest.mark.timeout(60)
ISSUER = "https://idp.example.test"


class Keys:
    def __init__(self) -> None:
        self.private = {
            "k1": rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "k2": rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "e1": ec.generate_private_key(ec.SECP256R1()),
        }

    def jwk(self, kid: str) -> dict[str, Any]:
        key = self.private[kid]
        algorithm = (
            jwt.algorithms.ECAlgorithm if kid.startswith("e") else jwt.algorithms.RSAAlgorithm
        )
        data: dict[str, Any] = json.loads(algorithm.to_jwk(key.public_key()))
        return {**data, "kid": kid, "use": "sig"}

    def token(self, kid: str = "k1", sign_with: str | None = None, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": ISSUER, "sub": "alice", "aud": "bookinfo", "iat": now, "exp": now + 600}
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        alg = "ES256" if kid.startswith("e") else "RS256"
        return jwt.encode(payload, self.private[sign_with or kid], alg, headers={"kid": kid})


class JwksServer:
    """Serves ``/jwks`` (the kids in ``self.kids``) and OpenID discovery; counts fetches."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self.kids = ["k1", "e1"]
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": outer.url, "jwks_uri": f"{outer.url}/jwks"}
                elif self.path == "/jwks":
                    outer.fetches += 1
                    body = {"keys": [outer.keys.jwk(k) for k in outer.kids]}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


@pytest.fixture
def jwks(keys: Keys) -> Iterator[JwksServer]:
    server = JwksServer(keys)
    yield server
    server.close()


def rule(jwks: JwksServer, **fields: Any) -> JwtRule:
    spec = {
        "issuer": ISSUER,
        "audiences": ["bookinfo"],
        "jwksUri": f"{jwks.url}/jwks",
        "outputPayloadToHeader": "x-jwt-payload",
        **fields,
    }
    return JwtRule.from_istio(spec)


async def whoami(request: Request) -> JSONResponse:
    result = current_jwt()
    return JSONResponse(
        {
            "principal": result.principal if result else None,
            "scope": result.normalized_claims.get("scope") if result else None,
            "authorization": request.headers.get("authorization"),
            "payload": request.headers.get("x-jwt-payload"),
            "from_scope": request.scope["meshlib.jwt"].principal,
        }
    )


@pytest.fixture
def asgi(jwks: JwksServer) -> Iterator[str]:
    app = Starlette(routes=[Route("/", whoami, methods=["GET", "OPTIONS"])])
    authenticator = JwtAuthenticator([rule(jwks)], min_refetch=0)
    with UvicornThread(JwtMiddleware(app, authenticator)) as server:
        yield f"http://127.0.0.1:{server.port}/"


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_asgi_valid_missing_and_invalid_tokens(asgi: str, keys: Keys) -> None:
    with httpx.Client(timeout=10) as client:
        token = keys.token(scope="read write")
        body = client.get(asgi, headers=bearer(token)).json()
        assert body["principal"] == f"{ISSUER}/alice" == body["from_scope"]
        assert body["scope"] == ["read", "write"]  # space-delimited claims split, as Istio
        assert body["authorization"] is None  # forwardOriginalToken: false removes it
        assert body["payload"] == token.split(".")[1]
        assert client.get(asgi, headers=bearer(keys.token("e1"))).json()["principal"]
        # Missing: passes, unauthenticated; a forged payload header does not get through.
        body = client.get(asgi, headers={"x-jwt-payload": "forged"}).json()
        assert body["principal"] is None and body["payload"] is None
        refused = {
            "Jwt is expired": keys.token(exp=int(time.time()) - 3600),
            "Jwt issuer is not configured": keys.token(iss="https://other.test"),
            "Audiences in Jwt are not allowed": keys.token(aud="other"),
            "Jwt verification fails": keys.token("k1", sign_with="k2"),
            "Jwt is not in the form of Header.Payload.Signature": "not-a-jwt",
            "Jwks doesn't have key to match kid or alg from Jwt": keys.token("k2"),
        }
        for message, bad in refused.items():
            r = client.get(asgi, headers=bearer(bad))
            assert (r.status_code, r.text) == (401, message)
            assert r.headers["www-authenticate"].startswith('Bearer realm="http://127.0.0.1')
        # The default locations include the access_token query parameter.
        assert client.get(asgi, params={"access_token": keys.token()}).json()["principal"]
        assert client.get(asgi, params={"access_token": "junk"}).status_code == 401
        # A CORS preflight bypasses authentication, as istiod configures Envoy.
        preflight = {"origin": "http://x", "access-control-request-method": "GET"}
        assert client.options(asgi, headers={**preflight, **bearer("junk")}).status_code != 401


def test_rotated_keys_are_fetched_and_old_ones_refused(
    asgi: str, keys: Keys, jwks: JwksServer
) -> None:
    with httpx.Client(timeout=10) as client:
        assert client.get(asgi, headers=bearer(keys.token("k1"))).status_code == 200
        fetched = jwks.fetches
        for _ in range(5):  # cached: no fetch per request
            assert client.get(asgi, headers=bearer(keys.token("k1"))).status_code == 200
        assert jwks.fetches == fetched
        jwks.kids = ["k2"]  # the identity provider rotates its signing key
        r = client.get(asgi, headers=bearer(keys.token("k2")))
        assert r.status_code == 200 and r.json()["principal"] == f"{ISSUER}/alice"
        assert jwks.fetches == fetched + 1  # the unknown kid made one refetch
        r = client.get(asgi, headers=bearer(keys.token("k1")))
        assert (r.status_code, r.text) == (
            401,
            "Jwks doesn't have key to match kid or alg from Jwt",
        )
    jwks.close()  # the JWKS server goes away: cached keys keep serving
    with httpx.Client(timeout=10) as client:
        assert client.get(asgi, headers=bearer(keys.token("k2"))).status_code == 200


def test_locations_inline_jwks_discovery_and_claim_headers(keys: Keys, jwks: JwksServer) -> None:
    inline = JwtRule.from_istio(
        {
            "issuer": ISSUER,
            "jwks": json.dumps({"keys": [keys.jwk("k1")]}),
            "fromHeaders": [{"name": "x-token", "prefix": "Token "}],
            "fromParams": ["t"],
            "outputClaimToHeaders": [{"header": "x-sub", "claim": "sub"}],
            "forwardOriginalToken": True,
        }
    )
    auth = JwtAuthenticator([inline])
    token = keys.token(aud=None)
    ok = auth.authenticate("GET", {"x-token": f"Token {token}"})
    assert ok.principal == f"{ISSUER}/alice" and ok.set_headers == {"x-sub": "alice"}
    assert "x-token" not in ok.remove_headers  # forwardOriginalToken: true
    assert auth.authenticate("GET", {}, f"t={token}").status == "ok"
    # Not in this rule's locations: the default Authorization header is not read.
    assert auth.authenticate("GET", bearer(token)).status == "missing"
    assert auth.authenticate("GET", {"x-token": token}).status == "missing"  # no prefix
    # No jwks and no jwksUri: the issuer's OpenID discovery document names the JWKS.
    discovered = JwtAuthenticator([JwtRule(issuer=jwks.url)])
    result = discovered.authenticate("GET", bearer(keys.token(iss=jwks.url)))
    assert result.status == "ok" and jwks.fetches == 1
    # Two issuers sharing the Authorization header: either one's valid token passes.
    other = JwtRule(issuer="https://other.test", jwks=json.dumps({"keys": [keys.jwk("k2")]}))
    both = JwtAuthenticator([inline, other])
    assert both.authenticate("GET", {"x-token": f"Token {token}"}).status == "ok"
    two = JwtAuthenticator([JwtRule(issuer=ISSUER, jwks=inline.jwks), other])
    assert (
        two.authenticate("GET", bearer(keys.token("k2", iss="https://other.test"))).status == "ok"
    )
    assert two.authenticate("GET", bearer(keys.token("k2"))).denied  # k2 is not ISSUER's key


def test_istio_rule_fields_are_checked() -> None:
    with pytest.raises(JwtConfigError, match=r"jwtRules\[0\]\.jwksUrl: unknown field \(did you"):
        JwtRule.from_istio({"issuer": ISSUER, "jwksUrl": "https://x"})
    with pytest.raises(JwtConfigError, match=r"jwtRules\[0\]\.issuer: is required"):
        JwtRule.from_istio({"jwksUri": "https://x/jwks"})
    with pytest.raises(JwtConfigError, match=r"fromHeaders\[0\]\.prefx: unknown field"):
        JwtRule.from_istio({"issuer": ISSUER, "fromHeaders": [{"name": "a", "prefx": "B "}]})
    with pytest.raises(JwtConfigError, match=r"audiences: must be a list of strings"):
        JwtRule.from_istio({"issuer": ISSUER, "audiences": "bookinfo"})
    with pytest.raises(JwtConfigError, match=r"jwksUri: 'file:///etc/passwd' is not an http"):
        JwtRule.from_istio({"issuer": ISSUER, "jwksUri": "file:///etc/passwd"})
    assert JwtRule.from_istio({"issuer": ISSUER, "timeout": "1.5s"}).timeout == 1.5


def test_wsgi(keys: Keys, jwks: JwksServer) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        result = current_jwt()
        start_response("200 OK", [("content-type", "application/json")])
        seen = {
            "principal": result.principal if result else None,
            "authorization": environ.get("HTTP_AUTHORIZATION"),
            "payload": environ.get("HTTP_X_JWT_PAYLOAD"),
        }
        return [json.dumps(seen).encode()]

    server = make_server(
        "127.0.0.1", 0, JwtWSGIMiddleware(app, JwtAuthenticator([rule(jwks)])), threaded=True
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/"
    try:
        with httpx.Client(timeout=10) as client:
            body = client.get(url, headers=bearer(keys.token())).json()
            assert body["principal"] == f"{ISSUER}/alice" and body["authorization"] is None
            assert body["payload"]
            assert client.get(url, headers={"x-jwt-payload": "forged"}).json() == {
                "principal": None,
                "authorization": None,
                "payload": None,
            }
            r = client.get(url, headers=bearer(keys.token(exp=1)))
            assert (r.status_code, r.text) == (401, "Jwt is expired")
    finally:
        server.shutdown()


def echo_handler() -> grpc.GenericRpcHandler:
    def whoami(request: bytes, context: Any) -> bytes:
        result = current_jwt()
        return (result.principal or "anonymous").encode() if result else b"none"

    return grpc.method_handlers_generic_handler(
        "test.Who", {"Am": grpc.unary_unary_rpc_method_handler(whoami)}
    )


def test_grpc_sync(keys: Keys, jwks: JwksServer) -> None:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        interceptors=[JwtServerInterceptor(JwtAuthenticator([rule(jwks)]))],
    )
    server.add_generic_rpc_handlers((echo_handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/test.Who/Am")
            token = keys.token()
            assert call(b"", metadata=[("authorization", f"Bearer {token}")], timeout=10) == (
                f"{ISSUER}/alice".encode()
            )
            assert call(b"", timeout=10) == b"anonymous"
            with pytest.raises(grpc.RpcError) as info:
                call(b"", metadata=[("authorization", f"Bearer {keys.token(aud='x')}")], timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert info.value.details() == "Audiences in Jwt are not allowed"
    finally:
        server.stop(0)


async def test_grpc_aio(keys: Keys, jwks: JwksServer) -> None:
    server = grpc.aio.server(interceptors=[JwtAioServerInterceptor(JwtAuthenticator([rule(jwks)]))])

    async def whoami(request: bytes, context: Any) -> bytes:
        result = current_jwt()
        return (result.principal or "anonymous").encode() if result else b"none"

    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "test.Who", {"Am": grpc.unary_unary_rpc_method_handler(whoami)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/test.Who/Am")
            token = keys.token()
            metadata = (("authorization", f"Bearer {token}"),)
            assert await call(b"", metadata=metadata, timeout=10) == f"{ISSUER}/alice".encode()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                bad = (("authorization", f"Bearer {keys.token(iss='https://x.test')}"),)
                await call(b"", metadata=bad, timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await server.stop(0)
