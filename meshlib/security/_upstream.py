"""Client TLS for a cluster: its UpstreamTlsContext resolved against the bootstrap's
certificate providers into one rotating ``ssl.SSLContext``.

The context handed to a connection pool never changes; each new connection takes the
context of the *current* certificate files (``client_context`` caches one per file
generation), so rotated files are used from the next handshake on while connections
already open keep theirs: rotation fails no request in flight.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from xds_client import CertificateProviderConfig
from xds_client.resources import SanMatcher as XdsSanMatcher
from xds_client.resources import UpstreamTls

from .._errors import MeshError
from ._contexts import client_context
from ._provider import FileWatcherProvider, provider_from_config
from ._spiffe import SanMatcher

__all__ = [
    "CertificateProviders",
    "RotatingClientContext",
    "UpstreamTlsError",
    "alpn_for",
    "upstream_context",
]

log = logging.getLogger("meshlib.security")


class UpstreamTlsError(MeshError):
    """A cluster's TLS settings cannot be used (reason ``tls_config``): e.g. a
    certificate provider instance the bootstrap does not define."""

    def __init__(self, message: str, *, cluster: str) -> None:
        super().__init__(message, cluster=cluster, reason="tls_config")


class CertificateProviders:
    """The bootstrap's ``certificate_providers``, each built once, on first use."""

    def __init__(self, configs: Mapping[str, CertificateProviderConfig] | None = None) -> None:
        self._configs = dict(configs or {})
        self._built: dict[str, FileWatcherProvider] = {}
        self._files: dict[tuple[str | None, str | None, str | None], FileWatcherProvider] = {}
        self._lock = threading.Lock()

    def instance(self, name: str) -> FileWatcherProvider:
        """The provider instance ``name``; KeyError naming the known ones when absent."""
        found = self._built.get(name)
        if found is not None:
            return found
        with self._lock:
            if name not in self._built:
                config = self._configs.get(name)
                if config is None:
                    known = ", ".join(sorted(self._configs)) or "none"
                    raise KeyError(
                        f"certificate provider instance {name!r} is not in the bootstrap's "
                        f"certificate_providers (known: {known})"
                    )
                self._built[name] = provider_from_config(
                    config.plugin_name, config.config, where=f"certificate_providers.{name}"
                )
            return self._built[name]

    def files(
        self, cert: str | None = None, key: str | None = None, ca: str | None = None
    ) -> FileWatcherProvider:
        """A provider for files named in the cluster resource itself."""
        with self._lock:
            found = self._files.get((cert, key, ca))
            if found is None:
                found = self._files[(cert, key, ca)] = FileWatcherProvider(
                    certificate_file=cert, private_key_file=key, ca_certificate_file=ca
                )
            return found


class RotatingClientContext(ssl.SSLContext):
    """An ``ssl.SSLContext`` whose every new connection uses ``build()``'s context.

    httpcore sets ALPN on the context it is given for each connection; here the
    cluster's protocol decides ALPN, so ``set_alpn_protocols`` is ignored.
    """

    _build: Callable[[], ssl.SSLContext]

    def __new__(cls, build: Callable[[], ssl.SSLContext]) -> RotatingClientContext:
        return super().__new__(cls, ssl.PROTOCOL_TLS_CLIENT)

    def __init__(self, build: Callable[[], ssl.SSLContext]) -> None:
        self._build = build

    def current(self) -> ssl.SSLContext:
        """The context new connections get now."""
        return self._build()

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        return self._build().wrap_socket(*args, **kwargs)

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        return self._build().wrap_bio(*args, **kwargs)

    def set_alpn_protocols(self, alpn_protocols: Any) -> None:
        return None


def alpn_for(protocol: str, tls: UpstreamTls) -> tuple[str, ...]:
    """ALPN to offer: the context's own list, else by the cluster's HTTP protocol."""
    if tls.alpn_protocols:
        return tls.alpn_protocols
    return {"http2": ("h2",), "auto": ("h2", "http/1.1")}.get(protocol, ("http/1.1",))


def _san(m: XdsSanMatcher) -> SanMatcher:
    return SanMatcher(m.kind, m.value, m.san_type or None, m.ignore_case)


def upstream_context(
    tls: UpstreamTls, providers: CertificateProviders, *, cluster: str, protocol: str = "http1"
) -> RotatingClientContext:
    """The rotating client context for ``cluster``; UpstreamTlsError when its settings
    name something this client does not have (checked now, not per connection)."""

    def fail(what: str) -> UpstreamTlsError:
        return UpstreamTlsError(f"{cluster}: transport_socket: {what}", cluster=cluster)

    identity: FileWatcherProvider | None = None
    try:
        if tls.identity_provider is not None:
            identity = providers.instance(tls.identity_provider.instance_name)
        elif tls.certificates:
            c = tls.certificates[0]
            if c.certificate_chain.kind != "filename" or c.private_key.kind != "filename":
                raise fail("tls_certificates: only file names are supported")
            identity = providers.files(c.certificate_chain.value, c.private_key.value)
        elif tls.identity_sds_secret:
            raise fail("tls_certificate_sds_secret_configs: SDS is not supported by clients")
        roots: FileWatcherProvider | None = None
        matchers: Sequence[SanMatcher] = ()
        v = tls.validation
        if v is not None:
            matchers = tuple(_san(m) for m in v.subject_alt_names)
            if v.ca_provider is not None:
                roots = providers.instance(v.ca_provider.instance_name)
            elif v.trusted_ca is not None:
                if v.trusted_ca.kind != "filename":
                    raise fail("validation_context.trusted_ca: only a file name is supported")
                roots = providers.files(ca=v.trusted_ca.value)
            elif v.sds_secret:
                raise fail("validation_context_sds_secret_config: SDS is not supported")
            elif v.system_root_certs:
                raise fail("validation_context.system_root_certs: is not supported")
    except KeyError as exc:
        raise fail(str(exc.args[0])) from None
    except (ValueError, OSError) as exc:
        raise fail(str(exc)) from None
    alpn = alpn_for(protocol, tls)

    def build() -> ssl.SSLContext:
        return client_context(identity, roots, matchers, alpn=alpn)

    return RotatingClientContext(build)
