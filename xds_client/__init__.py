"""xds_client: a strict xDS (Envoy v3) client for Python.

Usable on its own; never imports meshlib::

    from xds_client import XdsClient, load_bootstrap, CallbackWatcher
    from xds_client.resources import LISTENER

    client = XdsClient(load_bootstrap())          # GRPC_XDS_BOOTSTRAP / _CONFIG
    cancel = client.watch(LISTENER, "reviews:9080", CallbackWatcher(print))
"""

from ._bootstrap import (
    Bootstrap,
    BootstrapError,
    CertificateProviderConfig,
    Locality,
    Node,
    ServerConfig,
    load_bootstrap,
)
from ._client import XdsClient
from ._transport import AdsStream, AdsTransport, GrpcAdsTransport, StreamClosed
from ._watchers import CallbackWatcher, ResourceDoesNotExist, ResourceWatcher

__all__ = [
    "AdsStream",
    "AdsTransport",
    "Bootstrap",
    "BootstrapError",
    "CallbackWatcher",
    "CertificateProviderConfig",
    "GrpcAdsTransport",
    "Locality",
    "Node",
    "ResourceDoesNotExist",
    "ResourceWatcher",
    "ServerConfig",
    "StreamClosed",
    "XdsClient",
    "load_bootstrap",
]
