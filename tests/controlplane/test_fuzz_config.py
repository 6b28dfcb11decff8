"""Fuzzing the loaders with Istio's own documents (issue 15, issue 17).

Each case takes a valid object from Istio's samples (BookInfo, httpbin, helloworld, curl
and the tours' rules, copied under data/istio-samples) and renames one key, at a random
depth, to a near miss ("headers" -> "header", "subset" -> "subet", "mode" -> "Mode"), or
misspells its kind. Every mutant must be refused with its path named; nothing else may be
raised; a refused object never reaches the served configuration, and its last good
version keeps serving.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshlib.controlplane import ConfigError, ControlPlane
from meshlib.controlplane.objects._parse import PARSERS, parse_object
from meshlib.controlplane.objects._schema import spec_schema

pytestmark = pytest.mark.fuzz

SAMPLES = Path(__file__).parent / "data" / "istio-samples"
_REFUSED = {"tcp-echo_tcp-echo-all-v1.yaml"}


def _documents() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for sample in sorted(SAMPLES.iterdir()):
        if sample.name in _REFUSED:
            continue
        for doc in yaml.safe_load_all(sample.read_text()):
            if doc and doc.get("kind") in PARSERS:
                out.append((sample.name, doc))
    return out


DOCS = _documents()


def _object_keys(
    value: Any, schema: Any, path: tuple[Any, ...]
) -> Iterator[tuple[tuple[Any, ...], str, list[str]]]:
    """(path of a mapping, one of its keys, the keys its schema allows) for every key of
    an object the schema describes field by field (not map keys such as labels)."""
    node = schema if isinstance(schema, Mapping) else {}
    if isinstance(value, Mapping):
        props = node.get("properties")
        for key, sub in value.items():
            if props is not None:
                yield path, key, list(props)
                yield from _object_keys(sub, props.get(key, {}), (*path, key))
            elif isinstance(node.get("additionalProperties"), Mapping):
                yield from _object_keys(sub, node["additionalProperties"], (*path, key))
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            yield from _object_keys(sub, node.get("items", {}), (*path, i))


def _near_misses(key: str) -> list[str]:
    out = {key[:i] + key[i + 1 :] for i in range(len(key))}  # a letter dropped
    out |= {key[:i] + key[i + 1] + key[i] + key[i + 2 :] for i in range(len(key) - 1)}
    out |= {key[:i] + key[i] + key[i:] for i in range(len(key))}  # a letter doubled
    out |= {key[:i] + key[i].swapcase() + key[i + 1 :] for i in range(len(key))}
    out |= {key + "s", key.lower(), key.upper()}
    return sorted(k for k in out if k and k != key)


def _format(path: tuple[Any, ...]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


@st.composite
def mutants(draw: st.DrawFn) -> tuple[str, dict[str, Any], str, str, dict[str, Any]]:
    """(sample, mutated document, the path that must be named, how it was mutated, the
    original document)."""
    name, original = draw(st.sampled_from(DOCS))
    doc = copy.deepcopy(original)
    if draw(st.integers(0, 9)) == 0:
        doc["kind"] = draw(st.sampled_from(_near_misses(doc["kind"])))
        return name, doc, "kind", f"kind -> {doc['kind']}", original
    schema = spec_schema(doc["apiVersion"], doc["kind"])
    spots = list(_object_keys(doc, schema, ()))
    where, key, allowed = draw(st.sampled_from(spots))
    choices = [k for k in _near_misses(key) if k not in allowed]
    new = draw(st.sampled_from(choices))
    parent: Any = doc
    for part in where:
        parent = parent[part]
    if new in parent:
        new = new + "x"
    parent[new] = parent.pop(key)
    return name, doc, _format((*where, new)), f"{_format((*where, key))} -> {new}", original


CASES = {"n": 0, "started": time.monotonic()}


@settings(
    max_examples=5000,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutants())
def test_every_near_miss_in_istio_samples_is_refused_with_its_path(
    case: tuple[str, dict[str, Any], str, str, dict[str, Any]],
) -> None:
    sample, doc, path, how, _ = case
    CASES["n"] += 1
    with pytest.raises(ConfigError) as info:
        parse_object(doc)
    problems = info.value.problems
    assert any(f": {path}: " in p or p.endswith(f": {path}") for p in problems), (
        sample,
        how,
        problems,
    )


def test_fuzz_figures() -> None:
    print(f"fuzz: {CASES['n']} mutants, {time.monotonic() - CASES['started']:.1f}s")


@settings(max_examples=150, deadline=None, derandomize=True)
@given(mutants())
def test_a_refused_edit_never_applies_and_the_last_good_version_serves(
    tmp_path_factory: pytest.TempPathFactory,
    case: tuple[str, dict[str, Any], str, str, dict[str, Any]],
) -> None:
    _, doc, _, _, original = case
    folder = tmp_path_factory.mktemp("cfg")
    target = folder / "objects.yaml"
    target.write_text(yaml.safe_dump_all([original]))
    cp = ControlPlane(folder)
    cp.reload()
    good = dict(cp._good)
    served = cp.snapshot().version
    target.write_text(yaml.safe_dump_all([doc]))
    with pytest.raises(ConfigError):
        cp.reload()
    assert cp._good == good  # the last good version of every object keeps serving
    assert cp.snapshot().version == served  # nothing partial was pushed
