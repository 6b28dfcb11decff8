"""xds_client: a strict xDS (Envoy v3) client for Python.

Usable on its own; never imports meshlib::

    from xds_client import XdsClient, load_bootstrap, CallbackWatcher
    from xds_client.resources import LISTENER

    client = XdsClient(load_bootstrap())          # GRPC_XDS_BOOTSTRAP / _CONFIG
    cancel = client.watch(LISTENER, "reviews:9080", CallbackWatcher(print))
    print(client.dump())                          # CSDS: per-resource status

``xds_client.testing.ScriptedAdsServer`` is a real ADS server for tests, and
``xds_client.builders`` builds valid resources to start from.
"""

from ._bootstrap import (
    Authority,
    Bootstrap,
    BootstrapError,
    CertificateProviderConfig,
    Locality,
    Node,
    ServerConfig,
    load_bootstrap,
    parse_bootstrap,
)
from ._client import DEFAULT_RESOURCE_TYPES, XdsClient
from ._connection import Backoff, XdsConnectionError
from ._csds import CsdsServicer
from ._names import (
    XdstpName,
    canonical_name,
    listener_resource_name,
    parse_xdstp,
    server_listener_resource_name,
)
from ._transport import AdsStream, AdsTransport, GrpcAdsTransport, StreamClosed
from ._watchers import CallbackWatcher, ResourceDoesNotExist, ResourceWatcher

__all__ = [
    "DEFAULT_RESOURCE_TYPES",
    "AdsStream",
    "AdsTransport",
    "Authority",
    "Backoff",
    "Bootstrap",
    "BootstrapError",
    "CallbackWatcher",
    "CertificateProviderConfig",
    "CsdsServicer",
    "GrpcAdsTransport",
    "Locality",
    "Node",
    "ResourceDoesNotExist",
    "ResourceWatcher",
    "ServerConfig",
    "StreamClosed",
    "XdsClient",
    "XdsConnectionError",
    "XdstpName",
    "canonical_name",
    "listener_resource_name",
    "load_bootstrap",
    "parse_bootstrap",
    "parse_xdstp",
    "server_listener_resource_name",
]
