"""Fuzzing the bootstrap loader with hypothesis (5,000 mutated files, derandomized).

Mutations of valid bootstraps (istio-agent's exact shape and one setting every field): a
schema key renamed to a near miss at a random depth, a value replaced by one of another
type, a value wrapped in deep nesting, invalid UTF-8 or a lone surrogate spliced into the
text, a byte flipped, a key dropped. A near-miss rename must be refused naming the file,
the renamed key's path and the key it meant; every other mutation is either accepted, and
then its node reaches the wire as protobuf (what crashed ``Mesh()`` before), or refused
with a ``BootstrapError`` naming the file and a path or position. Nothing else may escape.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from envoy.service.discovery.v3 import discovery_pb2
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from xds_client import BootstrapError, load_bootstrap
from xds_client._client import node_proto

from .bootstrap_samples import CertFiles, every_field, istio_agent

pytestmark = [pytest.mark.fuzz, pytest.mark.timeout(120)]

CASES = 5000
FUZZ = settings(
    max_examples=CASES,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure reports at once
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
POSITION = re.compile(r"line \d+|offset \d+|invalid JSON")
SUPPORTED_CREDS = ("insecure", "tls", "google_default")
IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
COUNTS: dict[str, int] = {}


def keys_of(obj: Any, path: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    return [(*path, key) for key in obj] if isinstance(obj, dict) else []


def server_keys(server: dict[str, Any], path: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    out = keys_of(server, path)
    for j, cred in enumerate(server.get("channel_creds", [])):
        out += keys_of(cred, (*path, "channel_creds", j))
        if cred.get("type") in SUPPORTED_CREDS:  # the one chosen; later ones are not read
            out += keys_of(cred.get("config", {}), (*path, "channel_creds", j, "config"))
            break
    return out


def schema_keys(doc: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Paths (as key tuples) of every key of a fixed-schema object, at every depth; not
    the free-form keys (metadata, provider and authority names, unread configs)."""
    out = keys_of(doc, ())
    for i, server in enumerate(doc.get("xds_servers", [])):
        out += server_keys(server, ("xds_servers", i))
    node = doc.get("node", {})
    out += keys_of(node, ("node",)) + keys_of(node.get("locality"), ("node", "locality"))
    for name, provider in doc.get("certificate_providers", {}).items():
        out += keys_of(provider, ("certificate_providers", name))
        out += keys_of(provider.get("config"), ("certificate_providers", name, "config"))
    for name, authority in doc.get("authorities", {}).items():
        out += keys_of(authority, ("authorities", name))
        for i, server in enumerate(authority.get("xds_servers", [])):
            out += server_keys(server, ("authorities", name, "xds_servers", i))
    return out + keys_of(doc.get("cluster_manager"), ("cluster_manager",))


def all_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(value, dict):
        for key, child in value.items():
            out.extend(all_paths(child, (*path, key)))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            out.extend(all_paths(child, (*path, i)))
    return out


def parent_of(doc: Any, path: tuple[Any, ...]) -> Any:
    for step in path[:-1]:
        doc = doc[step]
    return doc


def json_path(path: tuple[Any, ...]) -> str:
    out = ""
    for step in path:
        if isinstance(step, int):
            out += f"[{step}]"
        elif IDENT.match(step):
            out += f".{step}" if out else step
        else:
            out += f"[{json.dumps(step)}]"
    return out


@st.composite
def near_miss(draw: st.DrawFn, key: str) -> str:
    """One edit away: a character dropped, doubled, swapped, or the case changed."""
    kind = draw(st.sampled_from(["drop", "double", "swap", "case"]))
    i = draw(st.integers(0, len(key) - 1))
    if kind == "drop" and len(key) > 2:
        return key[:i] + key[i + 1 :]
    if kind == "swap" and i + 1 < len(key) and key[i] != key[i + 1]:
        return key[:i] + key[i + 1] + key[i] + key[i + 2 :]
    if kind == "case" and key[i].isalpha():
        return key[:i] + key[i].swapcase() + key[i + 1 :]
    return key[:i] + key[i] + key[i:]


JSON_VALUES = st.sampled_from([7, -1, 1.5, "x", "", True, None, [], {}, ["x"], {"a": 1}])


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    certs = CertFiles(tmp_path_factory.mktemp("certs"))
    return [istio_agent("unix:///etc/istio/proxy/XDS", certs), every_field("127.0.0.1:1", certs)]


def test_mutated_bootstraps_give_only_bootstrap_errors(
    bases: list[dict[str, Any]], tmp_path: Path
) -> None:
    path = tmp_path / "bootstrap.json"

    @FUZZ
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        doc = json.loads(json.dumps(data.draw(st.sampled_from(bases))))
        kind = data.draw(
            st.sampled_from(["rename", "retype", "nest", "utf8", "surrogate", "flip", "drop"])
        )
        COUNTS[kind] = COUNTS.get(kind, 0) + 1
        renamed: tuple[tuple[Any, ...], str, str] | None = None
        if kind == "rename":
            where = data.draw(st.sampled_from(schema_keys(doc)))
            old = where[-1]
            new = data.draw(near_miss(old))
            parent = parent_of(doc, where)
            if new in parent or new == "UserAgentVersionType":
                return
            parent[new] = parent.pop(old)
            renamed = (where, old, new)
        elif kind in ("retype", "nest", "drop"):
            where = data.draw(st.sampled_from(all_paths(doc)[1:]))
            parent = parent_of(doc, where)
            if kind == "retype":
                parent[where[-1]] = data.draw(JSON_VALUES)
            elif kind == "nest":
                depth = data.draw(st.integers(20, 400))
                box = data.draw(st.sampled_from(["dict", "list"]))
                value = parent[where[-1]]
                for _ in range(depth):
                    value = {"k": value} if box == "dict" else [value]
                parent[where[-1]] = value
            elif isinstance(parent, dict):
                del parent[where[-1]]
            else:
                parent.pop(where[-1])
        text = json.dumps(doc).encode()
        if kind in ("utf8", "surrogate", "flip"):
            at = data.draw(st.integers(0, len(text)))
            if kind == "utf8":
                bad = data.draw(st.sampled_from([b"\xff", b"\xc3", b"\xc0\x80", b"\xed\xa0\x80"]))
                text = text[:at] + bad + text[at:]
            elif kind == "surrogate":
                strings = [m.end() - 1 for m in re.finditer(rb'"[^"\\]*"', text)]
                at = data.draw(st.sampled_from(strings))
                text = text[:at] + b"\\udc80" + text[at:]
            else:
                at = min(at, len(text) - 1)
                text = (
                    text[:at] + bytes([text[at] ^ data.draw(st.integers(1, 255))]) + text[at + 1 :]
                )
        path.write_bytes(text)
        try:
            boot = load_bootstrap(path)
        except BootstrapError as err:
            message = str(err)
            assert message.startswith(f"{path}: "), message
            assert err.source == str(path)
            assert err.path or POSITION.search(message), message
            if renamed is not None:
                where, old, new = renamed
                assert err.path == json_path((*where[:-1], new)), message
                assert f"unknown field (did you mean {old!r}?)" in message, message
            return
        assert renamed is None, f"rename {renamed} accepted"
        # What Mesh() does with the node: it must reach the wire and decode there.
        request = discovery_pb2.DiscoveryRequest(node=node_proto(boot.node))
        discovery_pb2.DiscoveryRequest.FromString(request.SerializeToString())

    run()
    print(f"bootstrap fuzz: {sum(COUNTS.values())} cases {dict(sorted(COUNTS.items()))}")
    assert sum(COUNTS.values()) >= CASES
