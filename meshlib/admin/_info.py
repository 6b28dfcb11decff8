"""``/server_info``, ``/listeners`` and ``/certs`` in Envoy's admin shapes.

- ``/server_info``: ``envoy.admin.v3.ServerInfo`` (version, state, uptime, node, the
  command line options that apply to a library: the bootstrap's source, the node's
  cluster, id and zone);
- ``/listeners``: one line per xDS listener the mesh resolved (``?format=json``:
  ``listener_statuses``), with its route configuration or the error;
- ``/certs``: ``envoy.admin.v3.Certificates`` for the workload certificate and the CA
  roots of each certificate provider (SPIFFE ID, serial, validity, days until
  expiration), with the issuer and subject added.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from envoy.admin.v3 import certs_pb2, server_info_pb2
from google.protobuf import json_format

from ._config_dump import xds_client_of

__all__ = ["certs_json", "listeners_json", "listeners_text", "server_info_json"]


@functools.cache
def _version() -> str:
    try:
        from importlib.metadata import version

        return f"meshlib/{version('meshlib')}"
    except Exception:
        return "meshlib/0"


def _process_start(fallback: float) -> float:
    """The process's start (epoch seconds), from /proc where there is one."""
    try:
        stat = Path("/proc/self/stat").read_text()
        ticks = int(stat.rpartition(")")[2].split()[19])
        boot = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return fallback


_STARTED = _process_start(time.time())


def server_info_json(mesh: Any, live: bool) -> dict[str, Any]:
    """Envoy's ``/server_info`` for this process (``live``: every target resolved)."""
    info = server_info_pb2.ServerInfo(
        version=_version(),
        state=server_info_pb2.ServerInfo.LIVE if live else server_info_pb2.ServerInfo.INITIALIZING,
        hot_restart_version="disabled",
    )
    uptime = max(0, int(time.time() - _STARTED))
    info.uptime_current_epoch.seconds = uptime
    info.uptime_all_epochs.seconds = uptime
    client = xds_client_of(mesh)
    node = getattr(client, "node", None)
    if node is not None:
        info.node.CopyFrom(node)
    options = info.command_line_options
    bootstrap = getattr(mesh, "bootstrap", None)
    source = str(getattr(bootstrap, "source", "") or "")
    if source and not source.startswith("<"):
        options.config_path = source
    options.service_node = info.node.id
    options.service_cluster = info.node.cluster
    options.service_zone = info.node.locality.zone
    options.mode = server_info_pb2.CommandLineOptions.Serve
    out = dict(json_format.MessageToDict(info, preserving_proto_field_name=True))
    out["state"] = server_info_pb2.ServerInfo.State.Name(info.state)  # LIVE is the default
    out["command_line_options"]["mode"] = "Serve"
    return out


def listeners_json(mesh: Any) -> dict[str, Any]:
    """``{"listener_statuses": [...]}``: every listener the mesh resolved, with its
    route configuration name (or ``error``)."""
    statuses = []
    for name, view in sorted(mesh.snapshot.listeners.items()):
        entry: dict[str, Any] = {"name": name, "local_address": {}}
        routes = view.routes
        if routes is not None:
            entry["route_config_name"] = getattr(routes, "name", "") or ""
        if view.error:
            entry["error"] = view.error
            entry["missing"] = bool(view.missing)
        statuses.append(entry)
    return {"listener_statuses": statuses}


def listeners_text(doc: dict[str, Any]) -> str:
    """Envoy's text ``/listeners``: ``name::address`` (an API listener has none)."""
    lines = []
    for entry in doc["listener_statuses"]:
        where = entry.get("route_config_name") or entry.get("error") or "api"
        lines.append(f"{entry['name']}::{where}")
    return "".join(line + "\n" for line in lines)


def _details(path: str, cert: x509.Certificate, now: dt.datetime) -> dict[str, Any]:
    details = certs_pb2.CertificateDetails(path=path, serial_number=format(cert.serial_number, "x"))
    not_after = cert.not_valid_after_utc
    details.days_until_expiration = max(0, (not_after - now).days)
    details.valid_from.FromDatetime(cert.not_valid_before_utc.replace(tzinfo=None))
    details.expiration_time.FromDatetime(not_after.replace(tzinfo=None))
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
            details.subject_alt_names.add(uri=uri)
        for dns in san.get_values_for_type(x509.DNSName):
            details.subject_alt_names.add(dns=dns)
    except x509.ExtensionNotFound:
        pass
    out = dict(json_format.MessageToDict(details, preserving_proto_field_name=True))
    out["days_until_expiration"] = str(details.days_until_expiration)  # even when 0
    out["issuer"] = cert.issuer.rfc4514_string()
    out["subject"] = cert.subject.rfc4514_string()
    out["expired"] = not_after <= now
    return out


def _read(path: str, now: dt.datetime) -> list[dict[str, Any]]:
    if not path:
        return []
    try:
        data = Path(path).read_bytes()
        return [_details(path, c, now) for c in x509.load_pem_x509_certificates(data)]
    except (OSError, ValueError) as exc:
        return [{"path": path, "error": f"{type(exc).__name__}: {exc}"}]


def certs_json(mesh: Any) -> dict[str, Any]:
    """``{"certificates": [{"ca_cert": [...], "cert_chain": [...]}]}``, one entry per
    certificate provider of the bootstrap (its ``provider`` name added)."""
    now = dt.datetime.now(dt.UTC)
    bootstrap = getattr(mesh, "bootstrap", None)
    providers = getattr(bootstrap, "certificate_providers", {}) or {}
    out = []
    for name, p in sorted(providers.items()):
        out.append(
            {
                "provider": name,
                "ca_cert": _read(p.ca_certificate_file, now),
                "cert_chain": _read(p.certificate_file, now),
            }
        )
    return {"certificates": out}
