"""Route matching against Envoy's documented meaning: table-driven per field, and
hypothesis properties against a plain reference implementation."""

from __future__ import annotations

import random
import re
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshlib import Call
from meshlib.routing._matchers import compile_header, compile_string, query_params
from tests.meshlib.xds_builders import table
from xds_client.resources.route import HeaderMatch, StringMatch


def hits(match: dict[str, Any], path: str = "/", headers: dict[str, str] | None = None) -> bool:
    t = table({"match": match, "route": {"cluster": "c"}})
    return t.route(Call("h:80", "GET", path, headers or {})) is not None


@pytest.mark.parametrize(
    ("match", "path", "expected"),
    [
        ({"safe_regex": {"regex": "/api/v[0-9]+"}}, "/api/v2", True),
        ({"safe_regex": {"regex": "/api/v[0-9]+"}}, "/api/v2/x", False),  # full match only
        ({"safe_regex": {"regex": "/api/v[0-9]+"}}, "/api/v2?x=1", True),  # query is not path
        (
            {"safe_regex": {"regex": "/API"}, "case_sensitive": False},
            "/api",
            False,
        ),  # regex ignores it
        ({"path": "/Ping", "case_sensitive": False}, "/pInG", True),
        ({"path_separated_prefix": "/api"}, "/api?x", True),
        ({"prefix": ""}, "/anything", True),
    ],
)
def test_path_specifiers(match: dict[str, Any], path: str, expected: bool) -> None:
    assert hits(match, path) is expected


H = "x-h"


@pytest.mark.parametrize(
    ("matcher", "value", "expected"),
    [
        ({"exact_match": "a"}, "a", True),
        ({"exact_match": "a"}, "A", False),
        ({"string_match": {"exact": "a", "ignore_case": True}}, "A", True),
        ({"prefix_match": "ab"}, "abc", True),
        ({"suffix_match": "bc"}, "abc", True),
        ({"contains_match": "b"}, "abc", True),
        ({"string_match": {"safe_regex": {"regex": "a.c"}}}, "abc", True),
        ({"string_match": {"safe_regex": {"regex": "a.c"}}}, "abcd", False),
        ({"safe_regex_match": {"regex": "[0-9]+"}}, "123", True),
        ({"range_match": {"start": -10, "end": 10}}, "-10", True),
        ({"range_match": {"start": -10, "end": 10}}, "10", False),  # end is exclusive
        ({"range_match": {"start": 0, "end": 10}}, "5.0", False),  # integers only
        ({"present_match": True}, "", True),
        ({"present_match": True}, None, False),
        ({"present_match": False}, None, True),
        ({"present_match": True, "invert_match": True}, None, True),
        ({"exact_match": "a", "invert_match": True}, "b", True),
        ({"exact_match": "a", "invert_match": True}, None, False),  # absent never matches
        ({"exact_match": "", "treat_missing_header_as_empty": True}, None, True),
        ({}, "anything", True),  # no specifier: present
        ({}, None, False),
    ],
)
def test_header_matcher(matcher: dict[str, Any], value: str | None, expected: bool) -> None:
    headers = {} if value is None else {H: value}
    assert hits({"prefix": "/", "headers": [{"name": H, **matcher}]}, "/", headers) is expected


def test_pseudo_headers_and_all_headers_must_match() -> None:
    match = {
        "prefix": "/",
        "headers": [
            {"name": ":method", "exact_match": "POST"},
            {"name": ":authority", "prefix_match": "api."},
            {"name": "x-a", "present_match": True},
        ],
    }
    t = table({"match": match, "route": {"cluster": "c"}})
    assert t.route(Call("api.x:80", "POST", "/", {"x-a": "1"})) is not None
    assert t.route(Call("api.x:80", "GET", "/", {"x-a": "1"})) is None
    assert t.route(Call("api.x:80", "POST", "/", {})) is None


@pytest.mark.parametrize(
    ("params", "path", "expected"),
    [
        ([{"name": "q", "present_match": True}], "/?q", True),
        ([{"name": "q", "present_match": True}], "/?qq=1", False),
        ([{"name": "q", "string_match": {"exact": "a b"}}], "/?q=a%20b", True),  # decoded
        ([{"name": "q", "string_match": {"prefix": "x"}}], "/?q=y&q=x", False),  # first value
        (
            [{"name": "q", "string_match": {"exact": "1"}}, {"name": "r", "present_match": True}],
            "/?q=1",
            False,
        ),
    ],
)
def test_query_parameter_matcher(params: list[dict[str, Any]], path: str, expected: bool) -> None:
    assert hits({"prefix": "/", "query_parameters": params}, path) is expected


def test_grpc_match_needs_grpc_content_type() -> None:
    t = table({"match": {"prefix": "/", "grpc": {}}, "route": {"cluster": "c"}})
    assert t.route(Call("h:80", "POST", "/pkg.S/M", {"content-type": "application/grpc+proto"}))
    assert t.route(Call("h:80", "POST", "/pkg.S/M", {"content-type": "application/json"})) is None


def test_runtime_fraction_matches_its_share() -> None:
    random.seed(11)
    t = table(
        {
            "match": {"prefix": "/", "runtime_fraction": {"default_value": {"numerator": 30}}},
            "route": {"cluster": "canary"},
        },
        {"match": {"prefix": "/"}, "route": {"cluster": "stable"}},
    )
    n = 4000
    canary = sum(t.route(Call("h:80", "GET", "/")).cluster == "canary" for _ in range(n))
    expected = 0.3 * n
    chi2 = (canary - expected) ** 2 / expected + (canary - expected) ** 2 / (n - expected)
    assert chi2 < 10.83, canary  # 1 degree of freedom, p = 0.001


# -- properties against a plain reference ------------------------------------------------
text = st.text(alphabet="aAbB/._-%0", max_size=12)


def reference_string(kind: str, pattern: str, ignore_case: bool, s: str) -> bool:
    if ignore_case:
        pattern, s = pattern.lower(), s.lower()
    return {
        "exact": s == pattern,
        "prefix": s.startswith(pattern),
        "suffix": s.endswith(pattern),
        "contains": pattern in s,
    }[kind]


@settings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from(["exact", "prefix", "suffix", "contains"]),
    pattern=text.filter(bool),
    ignore_case=st.booleans(),
    s=text,
)
def test_string_matcher_agrees_with_reference(
    kind: str, pattern: str, ignore_case: bool, s: str
) -> None:
    m = compile_string(StringMatch(kind, pattern, ignore_case))
    assert m(s) is reference_string(kind, pattern, ignore_case, s)


@settings(max_examples=150, deadline=None)
@given(
    pattern=st.sampled_from(["a+", "[ab]*", "a.b", "(ab)|b", "x?a"]), s=st.text("abx.", max_size=8)
)
def test_safe_regex_is_a_full_match(pattern: str, s: str) -> None:
    m = compile_string(StringMatch("safe_regex", pattern))
    assert m(s) is (re.fullmatch(pattern, s) is not None)


@settings(max_examples=200, deadline=None)
@given(
    value=st.none() | text,
    pattern=text.filter(bool),
    invert=st.booleans(),
    missing_as_empty=st.booleans(),
)
def test_header_matcher_agrees_with_reference(
    value: str | None, pattern: str, invert: bool, missing_as_empty: bool
) -> None:
    m = compile_header(
        HeaderMatch(
            "x-h", "string", StringMatch("prefix", pattern), True, (0, 0), invert, missing_as_empty
        )
    )
    call = Call("h:80", "GET", "/", {} if value is None else {"x-h": value})
    if value is None and missing_as_empty:
        value = ""
    expected = False if value is None else value.startswith(pattern) != invert
    assert m(call) is expected


@settings(max_examples=200, deadline=None)
@given(
    prefix=st.text(alphabet="ab/", max_size=5),
    path=st.text(alphabet="ab/", max_size=8),
    case_sensitive=st.booleans(),
)
def test_prefix_match_agrees_with_reference(prefix: str, path: str, case_sensitive: bool) -> None:
    prefix, path = "/" + prefix, "/" + path.upper() if not case_sensitive else "/" + path
    match = {"prefix": prefix, "case_sensitive": case_sensitive}
    expected = (
        path.startswith(prefix) if case_sensitive else path.lower().startswith(prefix.lower())
    )
    assert hits(match, path) is expected


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.text("ab&=% ", min_size=1, max_size=4), st.text("ab&=% ", max_size=4)),
        max_size=4,
    )
)
def test_query_parameters_parse_like_reference(pairs: list[tuple[str, str]]) -> None:
    path = "/p?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)
    expected: dict[str, str] = {}
    for k, v in pairs:
        expected.setdefault(k, v)
    assert query_params(path) == expected
