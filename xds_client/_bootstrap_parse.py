"""Field-by-field validation of a decoded gRPC bootstrap (gRFC A27/A29/A47/A53/A65).

Required fields and types are as strict as gRPC C-core's loader (``xds_servers`` non-empty,
``server_uri`` and ``channel_creds`` required, a supported channel credential type, a known
certificate provider plugin). Unlike gRPC, an unknown key is an error naming the key and
the known key it probably meant (``Reader.unknown_fields="warn"`` logs it instead). Fields
gRPC defines that meshlib does not implement are refused as "not supported by meshlib".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ._bootstrap_reader import (
    METADATA_MAX_DEPTH,
    Reader,
    UnknownFields,
    field_path,
    log,
    near_miss,
)
from ._bootstrap_types import (
    DELTA_FEATURE,
    Authority,
    Bootstrap,
    CertificateProviderConfig,
    Locality,
    Node,
    ServerConfig,
)

__all__ = [
    "KNOWN_SERVER_FEATURES",
    "SUPPORTED_CHANNEL_CREDS",
    "parse_bootstrap",
    "parse_with_files",
]

SUPPORTED_CHANNEL_CREDS = ("insecure", "tls", "google_default")
KNOWN_PLUGINS = ("file_watcher",)
#: Features meshlib acts on or knows; gRPC ignores others (forward compatibility), and so
#: does meshlib, with a warning naming a near miss.
KNOWN_SERVER_FEATURES = (
    "xds_v3",
    "ignore_resource_deletion",
    "trusted_xds_server",
    DELTA_FEATURE,
)
_TOP = (
    "xds_servers",
    "node",
    "certificate_providers",
    "server_listener_resource_name_template",
    "client_default_listener_resource_name_template",
    "authorities",
    "cluster_manager",  # meshlib extension: local_cluster_name, as Envoy's bootstrap
)
_SERVER = ("server_uri", "channel_creds", "server_features")
_CRED = ("type", "config")
_TLS_CONFIG = ("ca_certificate_file", "certificate_file", "private_key_file", "refresh_interval")
_NODE = ("id", "cluster", "locality", "metadata")
#: istio-agent marshals Envoy's Node with Go's encoding/json, which adds the oneof's Go
#: field name ("UserAgentVersionType": null); gRPC's parsers skip it, so does meshlib.
_NODE_IGNORED = ("UserAgentVersionType",)
_LOCALITY = ("region", "zone", "sub_zone")
_PROVIDER = ("plugin_name", "config")
_FILE_WATCHER = ("certificate_file", "private_key_file", "ca_certificate_file", "refresh_interval")
_AUTHORITY = ("client_listener_resource_name_template", "xds_servers")
_CLUSTER_MANAGER = ("local_cluster_name",)
_NOT_SUPPORTED = {
    "call_creds": "gRFC A97 call credentials",
    "spiffe_bundle_map_file": "gRFC A87 SPIFFE bundle maps",
}
_DURATION = re.compile(r"^(\d+)(\.\d{1,9})?s$")
_MAX_DURATION = 315_576_000_000  # protobuf Duration's range, in seconds
_URI_SCHEMES = ("unix:", "unix-abstract:", "dns:", "ipv4:", "ipv6:")


def parse_bootstrap(
    data: Any, source: str, *, unknown_fields: UnknownFields = "error"
) -> Bootstrap:
    """Validate decoded bootstrap JSON; ``source`` names it in errors."""
    return parse_with_files(data, source, unknown_fields=unknown_fields)[0]


def parse_with_files(
    data: Any, source: str, *, unknown_fields: UnknownFields = "error"
) -> tuple[Bootstrap, list[tuple[str, str]]]:
    """``parse_bootstrap`` and the (JSON path, file) of every file the bootstrap names."""
    r = Reader(source, unknown_fields)
    r.json_value(data, "")
    root = r.fields(data, "", _TOP, required=("xds_servers",))
    servers = _servers(r, root["xds_servers"], "xds_servers")
    node = _node(r, root.get("node", {}), "node")
    providers: dict[str, CertificateProviderConfig] = {}
    for name, value in r.obj(
        root.get("certificate_providers", {}), "certificate_providers"
    ).items():
        providers[name] = _provider(r, value, field_path("certificate_providers", name))
    authorities: dict[str, Authority] = {}
    for name, value in r.obj(root.get("authorities", {}), "authorities").items():
        authorities[name] = _authority(r, name, value, field_path("authorities", name))
    templates = {
        key: r.string(root.get(key), key)
        for key in (
            "client_default_listener_resource_name_template",
            "server_listener_resource_name_template",
        )
    }
    for key, template in templates.items():
        if template.startswith("xdstp:"):
            authority = template.removeprefix("xdstp:").removeprefix("//").partition("/")[0]
            if authority not in authorities:
                raise r.fail(key, f"authority {authority!r} is not in authorities")
    manager = r.fields(root.get("cluster_manager", {}), "cluster_manager", _CLUSTER_MANAGER)
    bootstrap = Bootstrap(
        xds_servers=servers,
        node=node,
        certificate_providers=providers,
        client_default_listener_resource_name_template=(
            templates["client_default_listener_resource_name_template"] or "%s"
        ),
        server_listener_resource_name_template=templates["server_listener_resource_name_template"],
        source=source,
        authorities=authorities,
        local_cluster_name=r.string(
            manager.get("local_cluster_name"), "cluster_manager.local_cluster_name"
        ),
    )
    return bootstrap, r.files


def _fields_of(
    r: Reader, value: Any, path: str, known: tuple[str, ...], **kwargs: Any
) -> Mapping[str, Any]:
    """``r.fields`` that also refuses the gRPC fields meshlib does not implement."""
    entry = r.obj(value, path)
    for key, what in _NOT_SUPPORTED.items():
        if key in entry:
            raise r.fail(field_path(path, key), f"not supported by meshlib ({what})")
    return r.fields(entry, path, known, **kwargs)


def _servers(r: Reader, value: Any, path: str) -> tuple[ServerConfig, ...]:
    raw = r.array(value, path)
    if not raw:
        raise r.fail(path, "must list at least one server")
    return tuple(_server(r, s, f"{path}[{i}]") for i, s in enumerate(raw))


def _server(r: Reader, value: Any, path: str) -> ServerConfig:
    entry = _fields_of(r, value, path, _SERVER, required=("server_uri", "channel_creds"))
    uri = r.string(entry.get("server_uri"), f"{path}.server_uri", required=True)
    _server_uri(r, uri, f"{path}.server_uri")
    kind, config = _channel_creds(r, entry["channel_creds"], f"{path}.channel_creds")
    features = r.array(entry.get("server_features", []), f"{path}.server_features")
    for i, feature in enumerate(features):
        if isinstance(feature, str) and feature not in KNOWN_SERVER_FEATURES:
            hint = near_miss(feature, KNOWN_SERVER_FEATURES)
            log.warning(
                "%s: %s.server_features[%d]: unknown feature %r ignored%s",
                r.source,
                path,
                i,
                feature,
                hint,
            )
    # gRPC ignores entries it does not understand "regardless of type"; so does meshlib.
    return ServerConfig(uri, kind, config, tuple(f for f in features if isinstance(f, str)))


def _server_uri(r: Reader, uri: str, path: str) -> None:
    """A gRPC target: ``host[:port]`` (gRPC's default port is 443), ``[v6]:port``, or a
    ``unix:``/``dns:``/``ipv4:``/``ipv6:`` URI; refused only where no target can be."""
    if any(c.isspace() or ord(c) < 0x20 for c in uri):
        raise r.fail(path, f"must be host:port or unix:/path, got {uri!r}")
    if uri.startswith(_URI_SCHEMES):
        return
    host, sep, port = uri.rpartition(":")
    if sep and port.isdigit() and not host.endswith(":"):
        if not 0 < int(port) <= 65535:
            raise r.fail(path, f"port {port} is out of range 1-65535 in {uri!r}")
    elif sep and not (uri.startswith("[") and uri.endswith("]")):
        raise r.fail(path, f"must be host:port or unix:/path, got {uri!r}")


def _channel_creds(r: Reader, value: Any, path: str) -> tuple[str, Mapping[str, Any]]:
    creds = r.array(value, path)
    if not creds:
        raise r.fail(path, "must list at least one credential type")
    names = []
    for i, cred in enumerate(creds):
        cred_path = f"{path}[{i}]"
        entry = r.fields(cred, cred_path, _CRED, required=("type",))
        kind = r.string(entry["type"], f"{cred_path}.type", required=True)
        if kind not in SUPPORTED_CHANNEL_CREDS:
            names.append(f"{kind!r}{near_miss(kind, SUPPORTED_CHANNEL_CREDS)}")
            continue
        config = r.obj(entry.get("config", {}), f"{cred_path}.config")
        cfg_path = f"{cred_path}.config"
        if kind != "tls":
            r.fields(config, cfg_path, ())
            return kind, dict(config)
        r.fields(config, cfg_path, _TLS_CONFIG)
        for key in ("ca_certificate_file", "certificate_file", "private_key_file"):
            r.file(config.get(key), f"{cfg_path}.{key}")
        if bool(config.get("certificate_file")) != bool(config.get("private_key_file")):
            raise r.fail(cfg_path, "certificate_file and private_key_file must be given together")
        _duration(r, config.get("refresh_interval"), f"{cfg_path}.refresh_interval")
        return kind, dict(config)
    raise r.fail(
        path,
        f"no supported type among {', '.join(names)} "
        f"(supported: {', '.join(SUPPORTED_CHANNEL_CREDS)})",
    )


def _duration(r: Reader, raw: Any, path: str, default: float = 600.0) -> float:
    """A protobuf JSON Duration (``"600s"``, ``"1.5s"``), positive."""
    if raw is None:
        return default
    match = _DURATION.match(raw) if isinstance(raw, str) else None
    if match is None:
        raise r.fail(path, f'must be a duration like "600s", got {raw!r}')
    seconds = float(match.group(1) + (match.group(2) or ""))
    if not 0 < seconds <= _MAX_DURATION:
        raise r.fail(path, f"must be positive and at most {_MAX_DURATION}s, got {raw!r}")
    return seconds


def _provider(r: Reader, value: Any, path: str) -> CertificateProviderConfig:
    entry = r.fields(value, path, _PROVIDER, required=("plugin_name",))
    plugin = r.string(entry["plugin_name"], f"{path}.plugin_name", required=True)
    if plugin not in KNOWN_PLUGINS:
        raise r.fail(
            f"{path}.plugin_name",
            f"unknown plugin {plugin!r}{near_miss(plugin, KNOWN_PLUGINS)} "
            f"(known: {', '.join(KNOWN_PLUGINS)})",
        )
    cfg_path = f"{path}.config"
    config = _fields_of(r, entry.get("config", {}), cfg_path, _FILE_WATCHER)
    files = {
        key: r.file(config.get(key), f"{cfg_path}.{key}")
        for key in ("certificate_file", "private_key_file", "ca_certificate_file")
    }
    if bool(files["certificate_file"]) != bool(files["private_key_file"]):
        raise r.fail(cfg_path, "certificate_file and private_key_file must be given together")
    if not any(files.values()):
        raise r.fail(
            cfg_path, "needs certificate_file and private_key_file, or ca_certificate_file"
        )
    interval = _duration(r, config.get("refresh_interval"), f"{cfg_path}.refresh_interval")
    return CertificateProviderConfig(plugin, dict(config), refresh_interval=interval, **files)


def _authority(r: Reader, name: str, value: Any, path: str) -> Authority:
    entry = r.fields(value, path, _AUTHORITY)
    key = "client_listener_resource_name_template"
    template = r.string(entry.get(key), f"{path}.{key}")
    template = template or f"xdstp://{name}/envoy.config.listener.v3.Listener/%s"
    prefix = f"xdstp://{name}/"
    if not template.startswith(prefix):
        raise r.fail(f"{path}.{key}", f"must start with {prefix!r}")
    servers: tuple[ServerConfig, ...] = ()
    if "xds_servers" in entry:
        servers = _servers(r, entry["xds_servers"], f"{path}.xds_servers")
    return Authority(name, template, servers)


def _node(r: Reader, value: Any, path: str) -> Node:
    entry = r.fields(value, path, _NODE, ignored=_NODE_IGNORED)
    loc_path = f"{path}.locality"
    loc = r.fields(entry.get("locality", {}), loc_path, _LOCALITY)
    meta_path = f"{path}.metadata"
    metadata = r.obj(entry.get("metadata", {}), meta_path)
    r.json_value(metadata, meta_path, max_depth=METADATA_MAX_DEPTH)
    return Node(
        id=r.string(entry.get("id"), f"{path}.id"),
        cluster=r.string(entry.get("cluster"), f"{path}.cluster"),
        locality=Locality(
            region=r.string(loc.get("region"), f"{loc_path}.region"),
            zone=r.string(loc.get("zone"), f"{loc_path}.zone"),
            sub_zone=r.string(loc.get("sub_zone"), f"{loc_path}.sub_zone"),
        ),
        metadata=dict(metadata),
    )
