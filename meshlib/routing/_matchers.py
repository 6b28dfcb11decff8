"""Compiled matchers: each xDS matcher model becomes one small closure, built once per
Snapshot. Header matchers follow Envoy's HeaderMatcher, including ``invert_match`` and
``treat_missing_header_as_empty``; regexes are RE2 with full-match semantics."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from urllib.parse import unquote

import re2

from xds_client.resources.route import HeaderMatch, Percent, QueryParamMatch, StringMatch

from .._call import Call

__all__ = [
    "HeaderPredicate",
    "StringPredicate",
    "compile_fraction",
    "compile_header",
    "compile_query",
    "compile_string",
    "header_value",
    "query_params",
]

StringPredicate = Callable[[str], bool]
HeaderPredicate = Callable[[Call], bool]


_STRING_TESTS: dict[str, Callable[[str, str], bool]] = {
    "exact": lambda s, v: s == v,
    "prefix": lambda s, v: s.startswith(v),
    "suffix": lambda s, v: s.endswith(v),
    "contains": lambda s, v: v in s,
}


def compile_string(m: StringMatch) -> StringPredicate:
    """A predicate implementing Envoy's StringMatcher."""
    if m.kind == "safe_regex":
        fullmatch = re2.compile(m.value).fullmatch
        return lambda s: fullmatch(s) is not None
    value = m.value.lower() if m.ignore_case else m.value
    test = _STRING_TESTS[m.kind]
    if m.ignore_case:
        return lambda s: test(s.lower(), value)
    return lambda s: test(s, value)


def header_value(call: Call, name: str) -> str | None:
    """A request header as Envoy's matchers see it, pseudo-headers included."""
    if name.startswith(":"):
        if name == ":path":
            return call.path
        if name == ":method":
            return call.method
        if name == ":authority":
            return call.headers.get("host") or call.authority
        if name == ":scheme":
            return call.scheme
        return None
    return call.headers.get(name)


def _get_value(name: str, missing_as_empty: bool) -> Callable[[Call], str | None]:
    if missing_as_empty:

        def get(call: Call) -> str | None:
            v = header_value(call, name)
            return "" if v is None else v

        return get
    return lambda call: header_value(call, name)


def compile_header(m: HeaderMatch) -> HeaderPredicate:
    """A predicate implementing Envoy's HeaderMatcher (HeaderUtility::matchHeaders)."""
    get = _get_value(m.name, m.treat_missing_as_empty)
    invert = m.invert
    # An absent header matches only a present_match: false (or, inverted, present_match: true).
    absent = m.kind == "present" and (m.present if invert else not m.present)
    test: Callable[[str], bool]
    if m.kind == "present":
        present = m.present
        test = lambda _v: present  # noqa: E731
    elif m.kind == "range":
        start, end = m.range

        def test(v: str) -> bool:
            try:
                n = int(v, 10)
            except ValueError:
                return False
            return start <= n < end

    else:
        assert m.string is not None
        test = compile_string(m.string)

    def match(call: Call) -> bool:
        v = get(call)
        if v is None:
            return absent
        return test(v) != invert

    return match


def query_params(path: str) -> dict[str, str]:
    """The query of ``path`` as name -> first value, percent-decoded."""
    _, _, query = path.partition("?")
    query = query.split("#", 1)[0]
    out: dict[str, str] = {}
    for part in query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        out.setdefault(unquote(name), unquote(value))
    return out


def compile_query(m: QueryParamMatch) -> Callable[[Mapping[str, str]], bool]:
    """A predicate over parsed query parameters (Envoy's QueryParameterMatcher)."""
    name = m.name
    if m.string is None:
        return lambda q: name in q
    test = compile_string(m.string)

    def match(q: Mapping[str, str]) -> bool:
        v = q.get(name)
        return v is not None and test(v)

    return match


def compile_fraction(p: Percent) -> Callable[[], bool]:
    """True for ``numerator`` out of ``denominator`` calls (runtime_fraction's default)."""
    numerator, denominator = p.numerator, p.denominator
    if numerator >= denominator:
        return lambda: True
    if numerator <= 0:
        return lambda: False
    return lambda: random.randrange(denominator) < numerator
