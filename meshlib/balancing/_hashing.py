"""The 64-bit hash functions Envoy's consistent-hashing balancers use, in pure Python.

``xxhash64`` is XXH64 (Envoy's default ``XX_HASH``; ring entries hash ``"<address>_<i>"``
with seed 0, a request header value is hashed the same way). ``murmur_hash2`` is the
64-bit MurmurHash2 variant Envoy offers as ``MURMUR_HASH_2`` (seed 0xc70f6907).
Both follow the published algorithm descriptions.
"""

from __future__ import annotations

__all__ = ["STD_HASH_SEED", "murmur_hash2", "xxhash64"]

_M = (1 << 64) - 1
_P1 = 0x9E3779B185EBCA87
_P2 = 0xC2B2AE3D27D4EB4F
_P3 = 0x165667B19E3779F9
_P4 = 0x85EBCA77C2B2AE63
_P5 = 0x27D4EB2F165667C5
STD_HASH_SEED = 0xC70F6907


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _M


def _round(acc: int, lane: int) -> int:
    return (_rotl((acc + lane * _P2) & _M, 31) * _P1) & _M


def xxhash64(data: bytes | str, seed: int = 0) -> int:
    """XXH64 of ``data`` (str is UTF-8 encoded)."""
    b = data.encode() if isinstance(data, str) else data
    n = len(b)
    i = 0
    if n >= 32:
        v1, v2, v3, v4 = (seed + _P1 + _P2) & _M, (seed + _P2) & _M, seed & _M, (seed - _P1) & _M
        while i + 32 <= n:
            v1 = _round(v1, int.from_bytes(b[i : i + 8], "little"))
            v2 = _round(v2, int.from_bytes(b[i + 8 : i + 16], "little"))
            v3 = _round(v3, int.from_bytes(b[i + 16 : i + 24], "little"))
            v4 = _round(v4, int.from_bytes(b[i + 24 : i + 32], "little"))
            i += 32
        h = (_rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)) & _M
        for v in (v1, v2, v3, v4):
            h = (((h ^ _round(0, v)) * _P1) + _P4) & _M
    else:
        h = (seed + _P5) & _M
    h = (h + n) & _M
    while i + 8 <= n:
        h ^= _round(0, int.from_bytes(b[i : i + 8], "little"))
        h = (_rotl(h, 27) * _P1 + _P4) & _M
        i += 8
    if i + 4 <= n:
        h ^= (int.from_bytes(b[i : i + 4], "little") * _P1) & _M
        h = (_rotl(h, 23) * _P2 + _P3) & _M
        i += 4
    while i < n:
        h ^= (b[i] * _P5) & _M
        h = (_rotl(h, 11) * _P1) & _M
        i += 1
    h ^= h >> 33
    h = (h * _P2) & _M
    h ^= h >> 29
    h = (h * _P3) & _M
    return h ^ (h >> 32)


_MUL = (0xC6A4A793 << 32) + 0x5BD1E995


def _shift_mix(v: int) -> int:
    return v ^ (v >> 47)


def murmur_hash2(data: bytes | str, seed: int = STD_HASH_SEED) -> int:
    """64-bit MurmurHash2 (the libstdc++ ``_Hash_bytes`` variant Envoy uses)."""
    b = data.encode() if isinstance(data, str) else data
    n = len(b)
    aligned = n & ~7
    h = (seed ^ (n * _MUL)) & _M
    for i in range(0, aligned, 8):
        d = (_shift_mix((int.from_bytes(b[i : i + 8], "little") * _MUL) & _M) * _MUL) & _M
        h = ((h ^ d) * _MUL) & _M
    if n & 7:
        h = ((h ^ int.from_bytes(b[aligned:], "little")) * _MUL) & _M
    h = (_shift_mix(h) * _MUL) & _M
    return _shift_mix(h)
