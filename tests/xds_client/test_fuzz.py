"""Fuzzing every decoder with hypothesis: random bytes, byte-mutated valid resources and
randomly filled messages. Only a ResourceError (a validation error) may come out; any
other exception is a decoder bug. 6,000 decoded inputs in all (random and mutated inputs
are drawn in batches of 8 per hypothesis example to keep the run short), derandomized."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from google.protobuf import any_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

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

from .test_listener_secret import mtls_listener

pytestmark = pytest.mark.fuzz
TYPES: list[ResourceType[Any]] = [LISTENER, ROUTE_CONFIG, CLUSTER, ENDPOINTS, SECRET]
SEEDS: dict[str, list[Message]] = {
    LISTENER.type_url: [b.api_listener("a:80", "r"), b.server_listener("in"), mtls_listener()],
    ROUTE_CONFIG.type_url: [b.route_config("r", "c", ["a", "*.b", "c:80"])],
    CLUSTER.type_url: [b.cluster("c", "svc")],
    ENDPOINTS.type_url: [b.endpoints("c", [("10.0.0.1", 80), ("10.0.0.2", 81)])],
    SECRET.type_url: [b.secret("s")],
}
FUZZ = settings(
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure reports at once
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
BATCH = 8
# Hypothesis examples per type; inputs per type: 60*8 + 80*8 + 80 = 1,200 (x 5 types).
COUNTS = {"bytes": 60, "mutated": 80, "structured": 80}


def check(rtype: ResourceType[Any], value: bytes) -> None:
    """Decode; a validation error is fine, anything else fails the test."""
    with contextlib.suppress(ResourceError):
        rtype.decode(any_pb2.Any(type_url=rtype.type_url, value=value))


@pytest.mark.parametrize("rtype", TYPES, ids=lambda t: t.type_name)
def test_random_bytes(rtype: ResourceType[Any]) -> None:
    @settings(FUZZ, max_examples=COUNTS["bytes"])
    @given(st.lists(st.binary(max_size=200), min_size=BATCH, max_size=BATCH))
    def run(values: list[bytes]) -> None:
        for value in values:
            check(rtype, value)

    run()


_mutation = st.tuples(
    st.sampled_from(["flip", "insert", "delete", "truncate", "byte"]),
    st.integers(min_value=0, max_value=10_000),
    st.integers(min_value=0, max_value=255),
)


def mutate(data: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    buf = bytearray(data)
    for op, pos, byte in ops:
        i = pos % (len(buf) + 1)
        if op == "flip" and buf:
            buf[i % len(buf)] ^= 1 << (byte % 8)
        elif op == "insert":
            buf.insert(i, byte)
        elif op == "delete" and buf:
            del buf[i % len(buf)]
        elif op == "truncate":
            del buf[i:]
        elif op == "byte" and buf:
            buf[i % len(buf)] = byte
    return bytes(buf)


@pytest.mark.parametrize("rtype", TYPES, ids=lambda t: t.type_name)
def test_mutated_valid_resources(rtype: ResourceType[Any]) -> None:
    seeds = [s.SerializeToString() for s in SEEDS[rtype.type_url]]
    for seed in seeds:  # the seeds themselves are valid
        rtype.decode(any_pb2.Any(type_url=rtype.type_url, value=seed))

    @settings(FUZZ, max_examples=COUNTS["mutated"])
    @given(
        st.lists(
            st.tuples(st.sampled_from(seeds), st.lists(_mutation, min_size=1, max_size=4)),
            min_size=BATCH,
            max_size=BATCH,
        )
    )
    def run(cases: list[tuple[bytes, list[tuple[str, int, int]]]]) -> None:
        for seed, ops in cases:
            check(rtype, mutate(seed, ops))

    run()


_SCALARS = {
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_STRING: st.sampled_from(["", "a", "*", "/", "a:80", "10.0.0.1", "é"]),
    FieldDescriptor.TYPE_BYTES: st.binary(max_size=8),
    FieldDescriptor.TYPE_DOUBLE: st.floats(allow_nan=True),
    FieldDescriptor.TYPE_FLOAT: st.floats(width=32, allow_nan=True),
}


_WIDE = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.type in _SCALARS:
        return _SCALARS[field.type]
    if field.type == FieldDescriptor.TYPE_ENUM:
        return st.sampled_from([v.number for v in field.enum_type.values] + [99])
    signed = field.type in (
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
    )
    bits = 64 if field.type in _WIDE else 32
    low = -(2 ** (bits - 1)) if signed else 0
    high = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
    return st.one_of(
        st.sampled_from([0, 1, -1 if signed else 2, 65535, 65536]), st.integers(low, high)
    )


def fill(data: st.DataObject, msg: Message, depth: int) -> None:
    """Set a random subset of ``msg``'s fields, recursing into sub-messages."""
    fields = [f for f in msg.DESCRIPTOR.fields if f.message_type is None or depth > 0]
    if not fields:
        return
    chosen = data.draw(st.lists(st.sampled_from(fields), max_size=4, unique_by=lambda f: f.name))
    for field in chosen:
        repeated = field.is_repeated
        if field.message_type is not None:
            if field.message_type.GetOptions().map_entry:
                continue
            target = getattr(msg, field.name).add() if repeated else getattr(msg, field.name)
            if _is_any(field.message_type):
                target.Pack(SEEDS[LISTENER.type_url][0])  # a well-formed nested Any
            else:
                target.SetInParent()
                fill(data, target, depth - 1)
        elif repeated:
            getattr(msg, field.name).append(data.draw(_scalar(field)))
        else:
            setattr(msg, field.name, data.draw(_scalar(field)))


def _is_any(descriptor: Descriptor) -> bool:
    return bool(descriptor.full_name == "google.protobuf.Any")


@pytest.mark.parametrize("rtype", TYPES, ids=lambda t: t.type_name)
def test_structured_messages(rtype: ResourceType[Any]) -> None:
    seeds = SEEDS[rtype.type_url]

    @settings(FUZZ, max_examples=COUNTS["structured"])
    @given(st.data(), st.sampled_from(range(len(seeds))))
    def run(data: st.DataObject, index: int) -> None:
        msg = type(seeds[index])()
        msg.CopyFrom(seeds[index])
        fill(data, msg, depth=3)
        check(rtype, msg.SerializeToString())

    run()
