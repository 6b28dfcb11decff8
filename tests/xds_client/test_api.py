"""The public surface of xds_client: exactly these names, each importable."""

from __future__ import annotations

import xds_client
import xds_client.builders
import xds_client.resources
import xds_client.testing

EXPECTED = {
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
}
RESOURCES_OF_THIS_AREA = {
    "LISTENER",
    "SECRET",
    "CertificateProviderInstance",
    "CidrRange",
    "DataSource",
    "DownstreamTls",
    "FaultConfig",
    "FilterChain",
    "FilterChainMatch",
    "HttpConnectionManager",
    "HttpFilter",
    "ListenerResource",
    "ListenerType",
    "RbacConfig",
    "ResourceError",
    "ResourceType",
    "SanMatcher",
    "SecretResource",
    "SecretType",
    "TlsCertificate",
    "ValidationContext",
}


def test_exported_names() -> None:
    assert set(xds_client.__all__) == EXPECTED
    assert set(xds_client.resources.__all__) >= RESOURCES_OF_THIS_AREA
    assert set(xds_client.testing.__all__) == {"AdsEvent", "ScriptedAdsServer"}
    for module in (xds_client, xds_client.resources, xds_client.testing, xds_client.builders):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_xds_client_never_imports_meshlib() -> None:
    import subprocess
    import sys

    code = (
        "import sys, xds_client, xds_client.testing, xds_client.builders;"
        "print(any(m == 'meshlib' or m.startswith('meshlib.') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
