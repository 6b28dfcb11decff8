"""gRPC-format xDS bootstrap: the file istio-agent and Traffic Director write.

Lookup order (gRFC A27): an explicit path or mapping from code, then the
``GRPC_XDS_BOOTSTRAP`` environment variable (a path), then
``GRPC_XDS_BOOTSTRAP_CONFIG`` (inline JSON). A file that does not exist yet is waited
for (istio-agent writes it after the application starts). Unknown fields are ignored;
every error names the source and the JSON path of the bad field.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Authority",
    "Bootstrap",
    "BootstrapError",
    "CertificateProviderConfig",
    "Locality",
    "Node",
    "ServerConfig",
    "load_bootstrap",
]

ENV_PATH = "GRPC_XDS_BOOTSTRAP"
ENV_CONFIG = "GRPC_XDS_BOOTSTRAP_CONFIG"
SUPPORTED_CHANNEL_CREDS = ("insecure", "tls", "google_default")
#: How long a bootstrap file named by GRPC_XDS_BOOTSTRAP may take to appear.
DEFAULT_ENV_FILE_WAIT = 10.0
#: A meshlib server feature (gRPC ignores unknown features): speak delta ADS to it.
DELTA_FEATURE = "delta_ads"
_DURATION = re.compile(r"^(\d+)(\.\d{1,9})?s$")


class BootstrapError(ValueError):
    """The bootstrap is missing or invalid; the message names the source and field."""


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


def load_bootstrap(
    source: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    *,
    wait_for_file: float | None = None,
) -> Bootstrap:
    """Load and validate a bootstrap from a path, a mapping, or the environment.

    ``wait_for_file``: seconds to wait for a missing file to appear; by default 0 for
    an explicit path and ``DEFAULT_ENV_FILE_WAIT`` for the ``GRPC_XDS_BOOTSTRAP`` path.
    """
    if isinstance(source, Mapping):
        return parse_bootstrap(source, "<bootstrap dict>")
    if source is not None:
        return _load_file(Path(source), wait_for_file or 0.0)
    path = os.environ.get(ENV_PATH)
    if path:
        wait = DEFAULT_ENV_FILE_WAIT if wait_for_file is None else wait_for_file
        return _load_file(Path(path), wait)
    inline = os.environ.get(ENV_CONFIG)
    if inline:
        return parse_bootstrap(_parse_json(inline, ENV_CONFIG), ENV_CONFIG)
    raise BootstrapError(
        f"no xDS bootstrap: pass one to Mesh(bootstrap=...) or set {ENV_PATH} (a path) "
        f"or {ENV_CONFIG} (inline JSON)"
    )


def _load_file(path: Path, wait: float) -> Bootstrap:
    deadline = time.monotonic() + wait
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        waited = f" (waited {wait:g}s)" if wait else ""
        raise BootstrapError(f"{path}: bootstrap file does not exist{waited}") from None
    except OSError as exc:
        raise BootstrapError(f"{path}: cannot read bootstrap file: {exc.strerror}") from None
    return parse_bootstrap(_parse_json(text, str(path)), str(path))


def _parse_json(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BootstrapError(
            f"{source}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None


class _Reader:
    """Typed accessors that report ``source: json.path: problem``."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, problem: str) -> BootstrapError:
        return BootstrapError(f"{self.source}: {path}: {problem}")

    def obj(self, value: Any, path: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(path, f"must be a JSON object, got {_kind(value)}")
        return value

    def array(self, value: Any, path: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(path, f"must be a JSON array, got {_kind(value)}")
        return value

    def string(self, value: Any, path: str, *, required: bool = False) -> str:
        if value is None and not required:
            return ""
        if not isinstance(value, str) or (required and not value):
            raise self.fail(path, f"must be a non-empty string, got {_kind(value)}")
        return value


def parse_bootstrap(data: Any, source: str) -> Bootstrap:
    """Validate decoded bootstrap JSON; ``source`` names it in errors."""
    r = _Reader(source)
    root = r.obj(data, "$")
    if "xds_servers" not in root:
        raise r.fail("xds_servers", "is required")
    servers_raw = r.array(root["xds_servers"], "xds_servers")
    if not servers_raw:
        raise r.fail("xds_servers", "must list at least one server")
    servers = tuple(_server(r, s, f"xds_servers[{i}]") for i, s in enumerate(servers_raw))
    node = _node(r, root.get("node", {}), "node")
    providers: dict[str, CertificateProviderConfig] = {}
    raw_providers = r.obj(root.get("certificate_providers", {}), "certificate_providers")
    for name, value in raw_providers.items():
        path = f"certificate_providers.{name}"
        entry = r.obj(value, path)
        plugin = r.string(entry.get("plugin_name"), f"{path}.plugin_name", required=True)
        config = r.obj(entry.get("config", {}), f"{path}.config")
        providers[name] = _provider(r, plugin, config, f"{path}.config")
    default_template = r.string(
        root.get("client_default_listener_resource_name_template"),
        "client_default_listener_resource_name_template",
    )
    authorities: dict[str, Authority] = {}
    raw_authorities = r.obj(root.get("authorities", {}), "authorities")
    for name, value in raw_authorities.items():
        authorities[name] = _authority(r, name, value, f"authorities.{name}")
    if default_template.startswith("xdstp://"):
        authority = default_template[len("xdstp://") :].partition("/")[0]
        if authority not in authorities:
            raise r.fail(
                "client_default_listener_resource_name_template",
                f"authority {authority!r} is not in authorities",
            )
    manager = r.obj(root.get("cluster_manager", {}), "cluster_manager")
    local_cluster = r.string(
        manager.get("local_cluster_name"), "cluster_manager.local_cluster_name"
    )
    return Bootstrap(
        xds_servers=servers,
        node=node,
        certificate_providers=providers,
        client_default_listener_resource_name_template=default_template or "%s",
        server_listener_resource_name_template=r.string(
            root.get("server_listener_resource_name_template"),
            "server_listener_resource_name_template",
        ),
        source=source,
        authorities=authorities,
        local_cluster_name=local_cluster,
    )


def _provider(
    r: _Reader, plugin: str, config: Mapping[str, Any], path: str
) -> CertificateProviderConfig:
    if plugin != "file_watcher":
        return CertificateProviderConfig(plugin, dict(config))
    files = {
        key: r.string(config.get(key), f"{path}.{key}")
        for key in ("certificate_file", "private_key_file", "ca_certificate_file")
    }
    if bool(files["certificate_file"]) != bool(files["private_key_file"]):
        raise r.fail(path, "certificate_file and private_key_file must be given together")
    if not any(files.values()):
        raise r.fail(path, "needs certificate_file and private_key_file, or ca_certificate_file")
    interval = 600.0
    raw = config.get("refresh_interval")
    if raw is not None:
        match = _DURATION.match(raw) if isinstance(raw, str) else None
        if match is None:
            raise r.fail(f"{path}.refresh_interval", f'must be a duration like "600s", got {raw!r}')
        interval = float(match.group(1) + (match.group(2) or ""))
        if interval <= 0:
            raise r.fail(f"{path}.refresh_interval", "must be positive")
    return CertificateProviderConfig(plugin, dict(config), refresh_interval=interval, **files)


def _authority(r: _Reader, name: str, value: Any, path: str) -> Authority:
    entry = r.obj(value, path)
    template = (
        r.string(
            entry.get("client_listener_resource_name_template"),
            f"{path}.client_listener_resource_name_template",
        )
        or f"xdstp://{name}/envoy.config.listener.v3.Listener/%s"
    )
    prefix = f"xdstp://{name}/"
    if not template.startswith(prefix):
        raise r.fail(
            f"{path}.client_listener_resource_name_template", f"must start with {prefix!r}"
        )
    servers: tuple[ServerConfig, ...] = ()
    if "xds_servers" in entry:
        raw = r.array(entry["xds_servers"], f"{path}.xds_servers")
        servers = tuple(_server(r, s, f"{path}.xds_servers[{i}]") for i, s in enumerate(raw))
    return Authority(name, template, servers)


def _server(r: _Reader, value: Any, path: str) -> ServerConfig:
    entry = r.obj(value, path)
    uri = r.string(entry.get("server_uri"), f"{path}.server_uri", required=True)
    if not (
        uri.startswith(("unix:", "unix-abstract:", "dns:", "ipv4:", "ipv6:"))
        or (":" in uri and uri.rsplit(":", 1)[1].isdigit())
    ):
        raise r.fail(f"{path}.server_uri", f"must be host:port or unix:/path, got {uri!r}")
    creds = r.array(entry.get("channel_creds", []), f"{path}.channel_creds")
    chosen: tuple[str, Mapping[str, Any]] | None = None
    for i, cred in enumerate(creds):
        cred_path = f"{path}.channel_creds[{i}]"
        cred_obj = r.obj(cred, cred_path)
        kind = r.string(cred_obj.get("type"), f"{cred_path}.type", required=True)
        if kind in SUPPORTED_CHANNEL_CREDS:
            chosen = (kind, dict(r.obj(cred_obj.get("config", {}), f"{cred_path}.config")))
            break
    if chosen is not None and chosen[0] == "tls":
        cfg_path = f"{path}.channel_creds[{i}].config"
        for key in ("ca_certificate_file", "certificate_file", "private_key_file"):
            r.string(chosen[1].get(key), f"{cfg_path}.{key}")
        if bool(chosen[1].get("certificate_file")) != bool(chosen[1].get("private_key_file")):
            raise r.fail(cfg_path, "certificate_file and private_key_file must be given together")
    if creds and chosen is None:
        raise r.fail(
            f"{path}.channel_creds",
            f"no supported type (supported: {', '.join(SUPPORTED_CHANNEL_CREDS)})",
        )
    features = r.array(entry.get("server_features", []), f"{path}.server_features")
    for i, feature in enumerate(features):
        r.string(feature, f"{path}.server_features[{i}]", required=True)
    kind, config = chosen or ("insecure", {})
    return ServerConfig(uri, kind, config, tuple(features))


def _node(r: _Reader, value: Any, path: str) -> Node:
    entry = r.obj(value, path)
    loc = r.obj(entry.get("locality", {}), f"{path}.locality")
    metadata = r.obj(entry.get("metadata", {}), f"{path}.metadata")
    return Node(
        id=r.string(entry.get("id"), f"{path}.id"),
        cluster=r.string(entry.get("cluster"), f"{path}.cluster"),
        locality=Locality(
            region=r.string(loc.get("region"), f"{path}.locality.region"),
            zone=r.string(loc.get("zone"), f"{path}.locality.zone"),
            sub_zone=r.string(loc.get("sub_zone"), f"{path}.locality.sub_zone"),
        ),
        metadata=dict(metadata),
    )


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), type(value).__name__
    )
