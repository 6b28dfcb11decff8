"""The validated bootstrap's types (see ``_bootstrap`` for loading)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DELTA_FEATURE",
    "Authority",
    "Bootstrap",
    "CertificateProviderConfig",
    "Locality",
    "Node",
    "ServerConfig",
]

#: A meshlib server feature (gRPC ignores unknown features): speak delta ADS to it.
DELTA_FEATURE = "delta_ads"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """One entry of ``xds_servers``: where and how to reach a management server."""

    server_uri: str
    channel_creds_type: str = "insecure"
    channel_creds_config: Mapping[str, Any] = field(default_factory=dict)
    server_features: tuple[str, ...] = ()

    @property
    def ignore_resource_deletion(self) -> bool:
        """gRFC A53: keep serving a resource the server says was deleted."""
        return "ignore_resource_deletion" in self.server_features

    @property
    def protocol(self) -> str:
        """``delta`` if the server lists the ``delta_ads`` feature, else ``sotw``."""
        return "delta" if DELTA_FEATURE in self.server_features else "sotw"


@dataclass(frozen=True, slots=True)
class Locality:
    region: str = ""
    zone: str = ""
    sub_zone: str = ""


@dataclass(frozen=True, slots=True)
class Node:
    """The identity this client presents to the control plane."""

    id: str = ""
    cluster: str = ""
    locality: Locality = Locality()
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CertificateProviderConfig:
    """A certificate provider instance. For ``file_watcher`` the typed fields are set
    (files may be empty when unused; ``refresh_interval`` in seconds, default 600)."""

    plugin_name: str
    config: Mapping[str, Any]
    certificate_file: str = ""
    private_key_file: str = ""
    ca_certificate_file: str = ""
    refresh_interval: float = 600.0


@dataclass(frozen=True, slots=True)
class Authority:
    """An ``authorities`` entry: where ``xdstp://<name>/...`` resources come from."""

    name: str
    client_listener_resource_name_template: str
    xds_servers: tuple[ServerConfig, ...] = ()


@dataclass(frozen=True, slots=True)
class Bootstrap:
    """A validated bootstrap."""

    xds_servers: tuple[ServerConfig, ...]
    node: Node
    certificate_providers: Mapping[str, CertificateProviderConfig] = field(default_factory=dict)
    client_default_listener_resource_name_template: str = "%s"
    server_listener_resource_name_template: str = ""
    source: str = "<dict>"
    authorities: Mapping[str, Authority] = field(default_factory=dict)
    #: Envoy's ``cluster_manager.local_cluster_name`` (a meshlib extension gRPC ignores):
    #: the cluster of this workload's own service, for zone-aware routing. "" = none.
    local_cluster_name: str = ""

    def servers_for(self, authority: str | None) -> tuple[ServerConfig, ...]:
        """The servers of an authority (its own, else the top-level ``xds_servers``)."""
        entry = self.authorities.get(authority) if authority is not None else None
        return entry.xds_servers if entry is not None and entry.xds_servers else self.xds_servers
