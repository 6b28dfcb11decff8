"""Peer identity: SPIFFE URI SANs, checked against a cluster's SAN matchers.

Python's ssl checks hostnames, not URI SANs, and the DNS name dialled is not the
workload's identity. So contexts built here verify the chain (CERT_REQUIRED against the
mesh roots) and then check the peer's SANs right after the handshake, on both the
blocking socket path (sync httpx) and the memory-BIO path (asyncio/anyio).
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from xds_client.resources.route import StringMatch

from ..routing._matchers import compile_string

__all__ = ["SanMatcher", "identity_mismatch", "peer_sans", "peer_spiffe_id"]


@dataclass(frozen=True, slots=True)
class SanMatcher:
    """Envoy's SubjectAltNameMatcher: a SAN type (None = any) and a string match."""

    kind: str  # exact, prefix, suffix, contains, safe_regex
    value: str
    san_type: str | None = "URI"  # URI, DNS, EMAIL, IP_ADDRESS or None
    ignore_case: bool = False

    def matches(self, san_type: str, value: str) -> bool:
        if self.san_type is not None and self.san_type != san_type:
            return False
        return _predicate(self)(value)


@functools.lru_cache(maxsize=1024)
def _predicate(m: SanMatcher) -> Callable[[str], bool]:
    """Envoy's StringMatcher semantics, shared with the routing matchers."""
    return compile_string(StringMatch(m.kind, m.value, m.ignore_case))


_SAN_TYPES = {"URI": "URI", "DNS": "DNS", "email": "EMAIL", "IP Address": "IP_ADDRESS"}


def peer_sans(cert: dict[str, Any] | None) -> list[tuple[str, str]]:
    """(type, value) pairs of a peer certificate as ``getpeercert()`` returns it."""
    if not cert:
        return []
    return [(_SAN_TYPES.get(t, t), v) for t, v in cert.get("subjectAltName", ())]


def peer_spiffe_id(cert: dict[str, Any] | None) -> str | None:
    """The first ``spiffe://`` URI SAN of a verified peer certificate."""
    for san_type, value in peer_sans(cert):
        if san_type == "URI" and value.startswith("spiffe://"):
            return value
    return None


def identity_mismatch(cert: dict[str, Any] | None, matchers: Sequence[SanMatcher]) -> str | None:
    """None when any SAN matches any matcher (or there are no matchers); else why not."""
    if not matchers:
        return None
    sans = peer_sans(cert)
    if any(m.matches(t, v) for m in matchers for t, v in sans):
        return None
    shown = ", ".join(f"{t}:{v}" for t, v in sans) or "none"
    return f"peer identity not allowed by the cluster's SAN matchers (peer SANs: {shown})"


def verify_after_handshake(obj: ssl.SSLSocket | ssl.SSLObject) -> None:
    matchers: Sequence[SanMatcher] = getattr(obj.context, "meshlib_san_matchers", ())
    problem = identity_mismatch(obj.getpeercert(), matchers)
    if problem is not None:
        raise ssl.SSLCertVerificationError(problem)


class VerifyingSSLSocket(ssl.SSLSocket):
    def do_handshake(self, block: bool = False) -> None:
        super().do_handshake(block)
        verify_after_handshake(self)


class VerifyingSSLObject(ssl.SSLObject):
    def do_handshake(self) -> None:
        super().do_handshake()
        verify_after_handshake(self)
