"""Authorization: Istio AuthorizationPolicy -> the control plane's RBAC filters -> in-process
evaluation, on a real server. Principals come from verified mTLS identities."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter_pb2
from fastapi import FastAPI
from meshlib.integrations._inbound import Inbound, InboundRequest
from meshlib.integrations._rbac import RbacAuthorizer, compile_rbac
from meshlib.integrations.asgi import MeshMiddleware

from meshlib.controlplane import FileSource
from meshlib.controlplane.translate._inbound import rbac_filters
from tests.support import UvicornThread
from xds_client.resources import ResourceError

POLICIES = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-readers, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  action: ALLOW
  rules:
    - from: [{source: {principals: ["cluster.local/ns/default/sa/productpage"]}}]
      to: [{operation: {methods: ["GET"], paths: ["/reviews/*"]}}]
    - from: [{source: {namespaces: ["ops"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  action: DENY
  rules:
    - to: [{operation: {paths: ["/reviews/admin*"]}}]
"""

PRODUCTPAGE = "spiffe://cluster.local/ns/default/sa/productpage"
OPS = "spiffe://cluster.local/ns/ops/sa/oncall"
RATINGS = "spiffe://cluster.local/ns/default/sa/ratings"


@pytest.fixture(scope="module")
def authorizer(tmp_path_factory: pytest.TempPathFactory) -> RbacAuthorizer:
    path: Path = tmp_path_factory.mktemp("authz") / "policies.yaml"
    path.write_text(POLICIES)
    objects = FileSource(path).load()
    filters = []
    for f in rbac_filters(objects, "default", {"app": "reviews"}):
        config = rbac_filter_pb2.RBAC()
        assert f.typed_config.Unpack(config)
        compiled = compile_rbac(f.name, config)
        assert compiled is not None
        filters.append(compiled)
    assert [f.action for f in filters] == ["DENY", "ALLOW"]  # Istio's order
    return RbacAuthorizer(filters)


@pytest.mark.parametrize(
    ("peer", "method", "path", "allowed"),
    [
        (PRODUCTPAGE, "GET", "/reviews/1", True),  # principal + method + path
        (PRODUCTPAGE, "POST", "/reviews/1", False),  # method not allowed
        (PRODUCTPAGE, "GET", "/ratings/1", False),  # path not allowed
        (RATINGS, "GET", "/reviews/1", False),  # principal not allowed
        (None, "GET", "/reviews/1", False),  # no identity (plaintext)
        (OPS, "DELETE", "/anything", True),  # namespace rule
        (OPS, "GET", "/reviews/admin/panel", False),  # DENY wins over ALLOW
        (PRODUCTPAGE, "GET", "/reviews/admin", False),
    ],
)
def test_policy_decisions(
    authorizer: RbacAuthorizer, peer: str | None, method: str, path: str, allowed: bool
) -> None:
    decision = authorizer.check(InboundRequest(method, path, {}, peer_identity=peer))
    assert decision.allowed is allowed, decision


def test_deny_names_the_policy(authorizer: RbacAuthorizer) -> None:
    d = authorizer.check(InboundRequest("GET", "/reviews/admin", {}, peer_identity=OPS))
    assert d.policy == "ns[default]-policy[no-admin]-rule[0]"


def test_enforced_before_the_handler_on_a_real_server(authorizer: RbacAuthorizer) -> None:
    app = FastAPI()
    calls: list[str] = []

    @app.get("/{path:path}")
    async def handler(path: str) -> dict[str, Any]:
        calls.append(path)
        return {"ok": True}

    app.add_middleware(MeshMiddleware, inbound=Inbound(authorizer=authorizer))
    with UvicornThread(app) as server:
        # Plaintext: no principal, so the ALLOW policy does not match.
        r = httpx.get(f"http://127.0.0.1:{server.port}/reviews/1")
    assert r.status_code == 403 and calls == []


def test_empty_allow_denies_all_and_missing_rules_allow_all() -> None:
    allow_nothing = compile_rbac(
        "allow", rbac_filter_pb2.RBAC(rules=rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW))
    )
    assert allow_nothing is not None
    assert not RbacAuthorizer([allow_nothing]).check(InboundRequest("GET", "/", {})).allowed
    assert compile_rbac("noop", rbac_filter_pb2.RBAC()) is None


def test_unsupported_rules_are_reported_with_the_field() -> None:
    config = rbac_filter_pb2.RBAC(rules=rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW))
    config.rules.policies["p"].permissions.add().metadata.filter = "x"
    config.rules.policies["p"].principals.add().any = True
    with pytest.raises(ResourceError, match=r"p.*permissions\[0\]\.metadata.*unsupported"):
        compile_rbac("f", config)
