"""ssl.SSLContext objects built from certificate providers, cached per file generation.

A context is rebuilt only when the provider reports new files (rotation); connections
already open keep the context they were made with, so rotation never fails a request
in flight. Files caught mid-rotation (a new key beside the old certificate) do not load:
the last context that did is used until the next look at the files, as gRPC's file
watcher keeps its last good certificates.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Sequence

from ._provider import CertificateFiles, FileWatcherProvider
from ._spiffe import SanMatcher, VerifyingSSLObject, VerifyingSSLSocket

__all__ = ["client_context", "server_context"]

_cache: dict[tuple[object, ...], ssl.SSLContext] = {}
_last_good: dict[tuple[object, ...], ssl.SSLContext] = {}
_lock = threading.Lock()
_MAX_CACHED = 256


def _files(provider: FileWatcherProvider | None) -> CertificateFiles | None:
    return provider.current() if provider is not None else None


def _load(
    ctx: ssl.SSLContext, identity: CertificateFiles | None, roots: CertificateFiles | None
) -> None:
    if identity is not None and identity.certificate_file and identity.private_key_file:
        ctx.load_cert_chain(identity.certificate_file, identity.private_key_file)
    if roots is not None and roots.ca_certificate_file:
        ctx.load_verify_locations(cafile=str(roots.ca_certificate_file))


def client_context(
    identity: FileWatcherProvider | None,
    roots: FileWatcherProvider | None,
    san_matchers: Sequence[SanMatcher] = (),
    *,
    alpn: Sequence[str] = ("http/1.1",),
) -> ssl.SSLContext:
    """A client context presenting ``identity`` (mTLS) and trusting ``roots``.

    The server's certificate must chain to the roots and, when ``san_matchers`` are
    given, carry a SAN one of them accepts (SPIFFE ID, not the DNS name dialled).
    """
    id_files, root_files = _files(identity), _files(roots)
    key = (
        "client",
        id(identity),
        id(roots),
        id_files and id_files.version,
        root_files and root_files.version,
        tuple(san_matchers),
        tuple(alpn),
    )
    ctx = _cache.get(key)
    if ctx is not None:
        return ctx
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False  # identity is the SAN check below, not the name dialled
    ctx.verify_mode = ssl.CERT_REQUIRED if root_files is not None else ssl.CERT_NONE
    previous = _load_or_previous(ctx, id_files, root_files, key)
    if previous is not None:
        return previous
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if san_matchers:
        ctx.meshlib_san_matchers = tuple(san_matchers)  # type: ignore[attr-defined]
        ctx.sslsocket_class = VerifyingSSLSocket
        ctx.sslobject_class = VerifyingSSLObject
    return _store(key, ctx)


def server_context(
    identity: FileWatcherProvider,
    roots: FileWatcherProvider | None,
    *,
    require_client_cert: bool = True,
    alpn: Sequence[str] = (),
) -> ssl.SSLContext:
    """A server context: ``require_client_cert`` for STRICT mTLS, optional for PERMISSIVE."""
    id_files, root_files = _files(identity), _files(roots)
    key = (
        "server",
        id(identity),
        id(roots),
        id_files and id_files.version,
        root_files and root_files.version,
        require_client_cert,
        tuple(alpn),
    )
    ctx = _cache.get(key)
    if ctx is not None:
        return ctx
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if root_files is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    previous = _load_or_previous(ctx, id_files, root_files, key)
    if previous is not None:
        return previous
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return _store(key, ctx)


def _stable(key: tuple[object, ...]) -> tuple[object, ...]:
    """``key`` without the file versions (positions 3 and 4)."""
    return key[:3] + key[5:]


def _load_or_previous(
    ctx: ssl.SSLContext,
    identity: CertificateFiles | None,
    roots: CertificateFiles | None,
    key: tuple[object, ...],
) -> ssl.SSLContext | None:
    """Load the files into ``ctx`` (None), or the last context that loaded for the same
    providers when these files do not (mid-rotation); raise when there is none."""
    try:
        _load(ctx, identity, roots)
    except (ssl.SSLError, OSError):
        previous = _last_good.get(_stable(key))
        if previous is None:
            raise
        return previous
    return None


def _store(key: tuple[object, ...], ctx: ssl.SSLContext) -> ssl.SSLContext:
    with _lock:
        if len(_cache) >= _MAX_CACHED:
            _cache.clear()  # old generations; live connections keep their own reference
            _last_good.clear()
        _cache[key] = ctx
        _last_good[_stable(key)] = ctx
    return ctx
