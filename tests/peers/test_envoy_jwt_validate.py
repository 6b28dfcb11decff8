"""Real Envoy accepts the server listener the control plane generates for
RequestAuthentication + AuthorizationPolicy (``jwt_authn`` with remote and inline JWKS,
RBAC metadata principals for ``requestPrincipals`` and ``request.auth.claims``):
``envoy --mode validate`` on a static bootstrap holding that listener."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format

from meshlib.controlplane import FileSource
from meshlib.controlplane.translate._inbound import inbound_listeners
from meshlib.controlplane.translate._registry import Registry
from tests.integrations.test_jwt_auth import Keys
from tests.integrations.test_mesh_jwt import policies
from tests.peers.peer_support import ENVOY
from tests.support import service_objects

pytestmark = pytest.mark.timeout(120)
JWKS_PORT = 18081  # only named in the listener and its cluster; nothing connects


def test_envoy_validates_the_jwt_listener(tmp_path: Path) -> None:
    objects = service_objects("reviews", 9080, [("127.0.0.1", 18080)])
    for obj in objects:
        if obj["kind"] == "EndpointSlice":
            obj["metadata"]["labels"]["app"] = "reviews"
    docs = policies(f"http://127.0.0.1:{JWKS_PORT}")
    inline = {"issuer": "inline", "jwks": json.dumps({"keys": [Keys().jwk("k1")]})}
    docs[0]["spec"]["jwtRules"].append(inline)
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "mesh.yaml").write_text(yaml.safe_dump_all(objects + docs))
    (listener,) = inbound_listeners(Registry(FileSource(tmp_path / "cfg").load())).values()
    doc = json_format.MessageToDict(listener, preserving_proto_field_name=True)
    names = [
        f["name"] for f in doc["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
    ]
    assert names[0] == "envoy.filters.http.jwt_authn"
    doc["address"] = {"socket_address": {"address": "127.0.0.1", "port_value": 0}}
    cluster = f"outbound|{JWKS_PORT}||127.0.0.1"
    endpoint = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": JWKS_PORT}}}
    bootstrap = {
        "static_resources": {
            "listeners": [doc],
            "clusters": [
                {
                    "name": cluster,
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": cluster,
                        "endpoints": [{"lb_endpoints": [{"endpoint": endpoint}]}],
                    },
                }
            ],
        }
    }
    config = tmp_path / "envoy.json"
    config.write_text(json.dumps(bootstrap))
    run = subprocess.run(
        [str(ENVOY), "--mode", "validate", "-c", str(config), "-l", "error"],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"configuration '{config}' OK" in run.stdout + run.stderr
