"""Field-level fuzzing of the xDS decoders (Listener, RouteConfiguration, Cluster,
ClusterLoadAssignment, Secret): realistic resources (what the control plane serves for
Istio YAML, Envoy's and the proxyless views) mutated field by field — values out of range,
fields cleared, wrong-typed or broken ``Any``, duplicated list entries, deep nesting,
unknown fields and random bytes. Only a ``ResourceError`` naming the resource type (the
NACK's error_detail) may come out. >= 5,000 cases per type; a scripted ADS server checks
the NACK carries that error_detail exactly."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from google.protobuf import any_pb2, struct_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from meshlib.controlplane import CertificateAuthority, ControlPlane, NodeView
from meshlib.controlplane.translate._tls import secrets_for
from xds_client import XdsClient, load_bootstrap
from xds_client import builders as b
from xds_client.resources import (
    CLUSTER,
    ENDPOINTS,
    LISTENER,
    ROUTE_CONFIG,
    SECRET,
    ResourceError,
    ResourceType,
)
from xds_client.testing import ScriptedAdsServer

from .test_fuzz import FUZZ, TYPES, mutate
from .test_listener_secret import mtls_listener

pytestmark = pytest.mark.fuzz
MESSAGES: dict[str, type[Message]] = {
    LISTENER.type_url: listener_pb2.Listener,
    ROUTE_CONFIG.type_url: route_pb2.RouteConfiguration,
    CLUSTER.type_url: cluster_pb2.Cluster,
    ENDPOINTS.type_url: endpoint_pb2.ClusterLoadAssignment,
    SECRET.type_url: secret_pb2.Secret,
}
CASES = 5000  # per type
BATCH = 25  # cases per hypothesis example
DEMO = Path(__file__).resolve().parents[2] / "examples" / "bookinfo"
FUZZ_FIELDS = settings(FUZZ, max_examples=CASES // BATCH)
TYPE_URLS = [t.type_url for t in TYPES] + [
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
    "HttpConnectionManager",
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
    "type.googleapis.com/google.protobuf.Struct",
    "type.googleapis.com/does.not.Exist",
    "",
]


def _seeds(tmp: Path) -> dict[str, list[Message]]:
    """Valid resources of each type, as the control plane serves them."""
    out: dict[str, list[Message]] = {t.type_url: [] for t in TYPES}
    ca = CertificateAuthority(tmp / "ca")
    cp = ControlPlane(DEMO, ca=ca)
    cp.reload()
    snap = cp.snapshot()
    envoy = NodeView(kind="envoy", listener_ports=((9080, 19080),))
    for view in (NodeView(), NodeView(kind="grpc"), envoy):
        for rtype in TYPES:
            for packed in snap.resources_for(view, rtype.type_url).values():
                msg = MESSAGES[rtype.type_url]()
                packed.Unpack(msg)
                out[rtype.type_url].append(msg)
    out[LISTENER.type_url] += [
        b.api_listener("a:80", "r"),
        b.server_listener("in"),
        mtls_listener(),
    ]
    out[ROUTE_CONFIG.type_url].append(b.route_config("r", "c", ["a", "*.b", "c:80"]))
    out[CLUSTER.type_url].append(b.cluster("c", "svc"))
    out[ENDPOINTS.type_url].append(b.endpoints("c", [("10.0.0.1", 80), ("10.0.0.2", 81)]))
    out[SECRET.type_url] += [
        b.secret("s"),
        *secrets_for(ca, "spiffe://cluster.local/ns/a/sa/b").values(),
    ]
    return out


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Message]]:
    return _seeds(tmp_path_factory.mktemp("fuzz"))


# -- mutations ------------------------------------------------------------------------------

_INT_EXTREMES = [0, 1, -1, 2**31 - 1, -(2**31), 2**32 - 1, 2**63 - 1, -(2**63), 2**64 - 1]
_FLOATS = [float("nan"), float("inf"), float("-inf"), -0.0, 1e308, -1.0, 1e-320, 101.0]
_STRINGS = ["", "\x00", "*", "é" * 3, "a" * 10_000, "[::1]:99999", "/../x", " ", "%zz"]


def _positions(msg: Message, out: list[tuple[Message, FieldDescriptor]], depth: int = 0) -> None:
    """Every (message, field) set somewhere in ``msg``'s tree (Any values not unpacked)."""
    if depth > 40:
        return
    for field, value in msg.ListFields():
        out.append((msg, field))
        if field.message_type is None or field.message_type.GetOptions().map_entry:
            continue
        if field.is_repeated:
            for item in value:
                _positions(item, out, depth + 1)
        else:
            _positions(value, out, depth + 1)


def _scalar_value(field: FieldDescriptor, r: random.Random) -> Any:
    t = field.type
    if t == FieldDescriptor.TYPE_BOOL:
        return r.random() < 0.5
    if t == FieldDescriptor.TYPE_STRING:
        return r.choice(_STRINGS)
    if t == FieldDescriptor.TYPE_BYTES:
        return r.randbytes(r.randrange(0, 64))
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return r.choice(_FLOATS)
    if t == FieldDescriptor.TYPE_ENUM:
        return r.choice([v.number for v in field.enum_type.values] + [12345, -1])
    return r.choice(_INT_EXTREMES)


def _set_scalar(msg: Message, field: FieldDescriptor, value: Any) -> None:
    """Set ``value``; a value the field's type cannot hold is silently not set."""
    try:
        if field.is_repeated:
            getattr(msg, field.name).append(value)
        else:
            setattr(msg, field.name, value)
    except (ValueError, TypeError, OverflowError):
        pass


def _deep_struct(depth: int) -> struct_pb2.Struct:
    inner = struct_pb2.Struct()
    for _ in range(depth):
        outer = struct_pb2.Struct()
        outer.fields["n"].struct_value.CopyFrom(inner)
        inner = outer
    return inner


def _deep_any(depth: int) -> any_pb2.Any:
    inner = any_pb2.Any(type_url="type.googleapis.com/google.protobuf.Empty")
    for _ in range(depth):
        outer = any_pb2.Any()
        outer.Pack(inner)
        inner = outer
    return inner


def _mutate_field(root: Message, r: random.Random, others: list[Message]) -> None:
    positions: list[tuple[Message, FieldDescriptor]] = []
    _positions(root, positions)
    if not positions:
        return
    msg, field = r.choice(positions)
    op = r.choice(["scalar", "clear", "any", "dup", "deep", "scalar", "any"])
    if op == "clear":
        msg.ClearField(field.name)
        return
    if field.message_type is None:
        _set_scalar(msg, field, _scalar_value(field, r))
        return
    target = getattr(msg, field.name)
    if field.is_repeated:
        if field.message_type.GetOptions().map_entry or not len(target):
            return
        if op == "dup":
            target.add().CopyFrom(target[r.randrange(len(target))])
            return
        target = target[r.randrange(len(target))]
    if target.DESCRIPTOR.full_name == "google.protobuf.Any":
        choice = r.randrange(4)
        if choice == 0:
            target.type_url = r.choice(TYPE_URLS)
        elif choice == 1:
            target.value = r.randbytes(r.randrange(1, 40))
        elif choice == 2:
            target.Pack(r.choice(others))  # a valid message of the wrong type
        else:
            target.CopyFrom(_deep_any(r.choice([5, 60, 120])))
        return
    if target.DESCRIPTOR.full_name == "google.protobuf.Struct":
        target.CopyFrom(_deep_struct(r.choice([10, 90, 150])))
        return
    # a sub-message: set one of its scalar fields out of range
    scalars = [f for f in target.DESCRIPTOR.fields if f.message_type is None]
    if scalars:
        f = r.choice(scalars)
        _set_scalar(target, f, _scalar_value(f, r))


def cases(seed_list: list[Message], others: list[Message], r: random.Random) -> Iterator[bytes]:
    """``BATCH`` mutated serializations of the seeds."""
    for _ in range(BATCH):
        seed = r.choice(seed_list)
        msg = type(seed)()
        msg.CopyFrom(seed)
        for _ in range(r.choice([1, 1, 2, 3])):
            _mutate_field(msg, r, others)
        data = msg.SerializeToString()
        kind = r.random()
        if kind < 0.1:  # unknown fields appended
            data += bytes([0xF8, 0xFF, 0x7F]) + r.randbytes(r.randrange(1, 8))
        elif kind < 0.2:  # and byte-level damage
            kinds = ["flip", "insert", "delete", "truncate", "byte"]
            ops = [
                (r.choice(kinds), r.randrange(10_000), r.randrange(256))
                for _ in range(r.randrange(1, 4))
            ]
            data = mutate(data, ops)
        yield data


def decode_only_resource_errors(rtype: ResourceType[Any], data: bytes) -> str | None:
    """Decode; return the ResourceError text or None. Any other exception fails the test."""
    try:
        rtype.decode(any_pb2.Any(type_url=rtype.type_url, value=data))
    except ResourceError as err:
        assert err.type_name == rtype.type_name and err.problem, repr(err)
        assert str(err).startswith(rtype.type_name), str(err)
        return str(err)
    except Exception as exc:  # a decoder bug: show the input
        raise AssertionError(f"{rtype.type_name} decoder raised {exc!r} on {data[:200]!r}") from exc
    return None


@pytest.mark.parametrize("rtype", TYPES, ids=lambda t: t.type_name)
def test_mutated_fields(rtype: ResourceType[Any], seeds: dict[str, list[Message]]) -> None:
    seed_list = seeds[rtype.type_url]
    others = [m for url, ms in seeds.items() if url != rtype.type_url for m in ms[:3]]
    for seed in seed_list:  # the seeds are valid
        assert decode_only_resource_errors(rtype, seed.SerializeToString()) is None, seed
    counts = {"cases": 0, "refused": 0}
    started = time.monotonic()

    @FUZZ_FIELDS
    @given(st.randoms(use_true_random=False))
    def run(r: random.Random) -> None:
        for data in cases(seed_list, others, r):
            counts["cases"] += 1
            counts["refused"] += decode_only_resource_errors(rtype, data) is not None

    run()
    print(
        f"[fuzz] {rtype.type_name}: {counts['cases']} cases from {len(seed_list)} seeds, "
        f"{counts['refused']} refused with a ResourceError, 0 other errors, "
        f"{time.monotonic() - started:.1f} s"
    )
    assert counts["cases"] >= CASES, counts
    assert counts["refused"] > counts["cases"] // 20, counts  # the mutations do bite


def test_a_fuzzed_resource_is_nacked_with_its_error_detail(
    seeds: dict[str, list[Message]],
) -> None:
    """Over a real ADS stream the client NACKs exactly the decoder's error text and keeps
    the last good version."""
    r = random.Random(7)
    good = seeds[CLUSTER.type_url][0]
    name = good.name  # type: ignore[attr-defined]
    bad: bytes | None = None
    for data in cases([good], seeds[LISTENER.type_url][:2], r):
        detail = decode_only_resource_errors(CLUSTER, data)
        probe = cluster_pb2.Cluster()
        try:
            probe.ParseFromString(data)
        except Exception:
            continue
        if detail is not None and probe.name == name:
            bad = data
            break
    assert bad is not None
    with ScriptedAdsServer() as server:
        server.set_resources(CLUSTER.type_url, {name: b.pack(good)})
        client = XdsClient(load_bootstrap(server.bootstrap()))
        try:
            got: list[Any] = []

            class W:
                def on_resource_changed(self, n: str, res: Any) -> None:
                    got.append(res)

                def on_resource_error(self, n: str, err: Exception) -> None:
                    got.append(err)

                def on_ambient_error(self, n: str, err: Exception) -> None:
                    got.append(err)

            client.watch(CLUSTER, name, W())
            server.wait_for(lambda e: e.kind == "ACK" and e.type_url == CLUSTER.type_url)
            server.set_resources(
                CLUSTER.type_url, {name: any_pb2.Any(type_url=CLUSTER.type_url, value=bad)}
            )
            nack = server.wait_for(lambda e: e.kind == "NACK" and e.type_url == CLUSTER.type_url)
            expected = decode_only_resource_errors(CLUSTER, bad)
            assert nack.error_detail is not None and expected is not None
            assert expected in nack.error_detail, (nack.error_detail, expected)
        finally:
            client.close()
