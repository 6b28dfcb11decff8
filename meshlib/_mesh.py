"""Mesh: the application's handle on the mesh."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import httpx

from xds_client import Bootstrap, XdsClient, load_bootstrap

from ._config_watch import ConfigWatcher
from ._engine import Engine
from ._httpx_transport import MeshTransport, UnknownHostPolicy
from ._snapshot import Snapshot

__all__ = ["Mesh"]


class Mesh:
    """Connects to the control plane named by the bootstrap and routes clients through it.

    ``bootstrap`` is a path, a dict, or None to read ``GRPC_XDS_BOOTSTRAP`` /
    ``GRPC_XDS_BOOTSTRAP_CONFIG``. Use as a context manager, or call ``close()``.
    """

    def __init__(
        self,
        bootstrap: str | os.PathLike[str] | Mapping[str, Any] | None = None,
        *,
        resolve_timeout: float = 10.0,
        unknown_hosts: UnknownHostPolicy = "passthrough",
    ) -> None:
        self.bootstrap: Bootstrap = load_bootstrap(bootstrap)
        self.resolve_timeout = resolve_timeout
        self.unknown_hosts = unknown_hosts
        self._client = XdsClient(self.bootstrap)
        template = self.bootstrap.client_default_listener_resource_name_template
        self._engine = Engine(
            lambda publish: ConfigWatcher(self._client, publish),
            lambda authority: template.replace("%s", authority),
        )

    @property
    def snapshot(self) -> Snapshot:
        """The current immutable config snapshot."""
        return self._engine.snapshot

    def httpx_transport(self) -> MeshTransport:
        """A transport to pass as ``httpx.Client(transport=...)``."""
        return MeshTransport(
            self._engine, resolve_timeout=self.resolve_timeout, unknown_hosts=self.unknown_hosts
        )

    def httpx_client(self, **kwargs: Any) -> httpx.Client:
        """An ``httpx.Client`` whose requests go through the mesh; kwargs go to httpx."""
        return httpx.Client(transport=self.httpx_transport(), **kwargs)

    def describe(self) -> str:
        """The client stack, outermost layer first."""
        return self._engine.describe()

    def close(self) -> None:
        """End the xDS stream and its thread."""
        self._engine.close()
        self._client.close()

    def __enter__(self) -> Mesh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
