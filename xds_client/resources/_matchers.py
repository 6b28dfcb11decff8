"""Matcher models shared by route, retry and fault config: strings, headers, query
parameters, fractional percentages, and RE2 regex validation (a regex RE2 rejects is a NACK).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import re2

from ._base import ResourceError

__all__ = [
    "MAX_REGEX_PROGRAM_SIZE",
    "HeaderMatch",
    "Percent",
    "QueryParamMatch",
    "StringMatch",
    "check_regex",
    "decode_header_matcher",
    "decode_percent",
    "decode_query_matcher",
    "decode_regex",
    "decode_string_matcher",
]

#: Envoy rejects a google_re2 program larger than this (runtime re2.max_program_size.error_level).
MAX_REGEX_PROGRAM_SIZE = 100
_DENOMINATORS = (100, 10_000, 1_000_000)  # FractionalPercent.DenominatorType

Fail = Callable[[str, str], ResourceError]


@dataclass(frozen=True, slots=True)
class StringMatch:
    """Envoy's StringMatcher: ``kind`` is exact, prefix, suffix, contains or safe_regex
    (full match)."""

    kind: str
    value: str
    ignore_case: bool = False


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    """Envoy's HeaderMatcher. ``kind`` is ``string``, ``present`` or ``range``.

    ``range`` is [start, end) over the header's integer value. Pseudo-headers
    ``:path``, ``:method``, ``:authority`` and ``:scheme`` are matchable.
    """

    name: str
    kind: str
    string: StringMatch | None = None
    present: bool = True
    range: tuple[int, int] = (0, 0)
    invert: bool = False
    treat_missing_as_empty: bool = False


@dataclass(frozen=True, slots=True)
class QueryParamMatch:
    """Envoy's QueryParameterMatcher: the parameter is present, or its value matches."""

    name: str
    string: StringMatch | None = None  # None: present_match


@dataclass(frozen=True, slots=True)
class Percent:
    """A FractionalPercent: ``numerator`` out of ``denominator`` (100, 10^4 or 10^6)."""

    numerator: int
    denominator: int = 100

    @property
    def fraction(self) -> float:
        return self.numerator / self.denominator


def check_regex(pattern: str, field: str, fail: Fail) -> None:
    """NACK a regex RE2 cannot compile, or one whose program exceeds Envoy's limit."""
    try:
        compiled = re2.compile(pattern)
    except Exception as exc:  # re2.error
        raise fail(field, f"invalid RE2 regex {pattern!r}: {exc}") from None
    if compiled.programsize > MAX_REGEX_PROGRAM_SIZE:
        raise fail(
            field,
            f"regex {pattern!r} program size {compiled.programsize} exceeds the limit "
            f"{MAX_REGEX_PROGRAM_SIZE}",
        )


def decode_regex(msg: Any, field: str, fail: Fail) -> str:
    """A RegexMatcher's validated pattern."""
    if not msg.regex:
        raise fail(f"{field}.regex", "must not be empty")
    check_regex(msg.regex, f"{field}.regex", fail)
    return str(msg.regex)


def decode_string_matcher(msg: Any, field: str, fail: Fail) -> StringMatch:
    which = msg.WhichOneof("match_pattern")
    if which is None:
        raise fail(field, "a match pattern (exact, prefix, ...) is required")
    if which == "safe_regex":
        return StringMatch("safe_regex", decode_regex(msg.safe_regex, f"{field}.safe_regex", fail))
    if which == "custom":
        raise fail(f"{field}.custom", "custom string matchers are not supported")
    value = str(getattr(msg, which))
    if which in ("prefix", "suffix", "contains") and not value:
        raise fail(f"{field}.{which}", "must not be empty")
    return StringMatch(which, value, bool(msg.ignore_case))


def decode_header_matcher(msg: Any, field: str, fail: Fail) -> HeaderMatch:
    name = str(msg.name)
    if not name:
        raise fail(f"{field}.name", "must not be empty")
    if name != name.lower():
        name = name.lower()
    which = msg.WhichOneof("header_match_specifier")
    invert, missing = bool(msg.invert_match), bool(msg.treat_missing_header_as_empty)
    if which is None:  # Envoy: no specifier means "present"
        return HeaderMatch(name, "present", invert=invert, treat_missing_as_empty=missing)
    if which == "present_match":
        return HeaderMatch(name, "present", present=bool(msg.present_match), invert=invert)
    if which == "range_match":
        start, end = int(msg.range_match.start), int(msg.range_match.end)
        if end <= start:
            raise fail(f"{field}.range_match", f"end ({end}) must be greater than start ({start})")
        return HeaderMatch(name, "range", range=(start, end), invert=invert)
    if which == "string_match":
        sm = decode_string_matcher(msg.string_match, f"{field}.string_match", fail)
    elif which == "safe_regex_match":
        sm = StringMatch(
            "safe_regex", decode_regex(msg.safe_regex_match, f"{field}.safe_regex_match", fail)
        )
    else:  # deprecated exact_match, prefix_match, suffix_match, contains_match
        value = str(getattr(msg, which))
        if which != "exact_match" and not value:
            raise fail(f"{field}.{which}", "must not be empty")
        sm = StringMatch(which.removesuffix("_match"), value)
    return HeaderMatch(name, "string", sm, invert=invert, treat_missing_as_empty=missing)


def decode_query_matcher(msg: Any, field: str, fail: Fail) -> QueryParamMatch:
    if not msg.name:
        raise fail(f"{field}.name", "must not be empty")
    which = msg.WhichOneof("query_parameter_match_specifier")
    if which == "string_match":
        sm = decode_string_matcher(msg.string_match, f"{field}.string_match", fail)
        return QueryParamMatch(str(msg.name), sm)
    if which == "present_match" and not msg.present_match:
        raise fail(f"{field}.present_match", "must be true when set")
    return QueryParamMatch(str(msg.name))


def decode_percent(msg: Any, field: str, fail: Fail) -> Percent:
    """A FractionalPercent; a numerator above the denominator is clamped (as Envoy does)."""
    try:
        denominator = _DENOMINATORS[int(msg.denominator)]
    except IndexError:
        raise fail(f"{field}.denominator", f"unknown denominator {msg.denominator}") from None
    return Percent(min(int(msg.numerator), denominator), denominator)
