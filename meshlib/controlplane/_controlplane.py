"""The embedded control plane: a source, translation, a snapshot cache and an ADS server."""

from __future__ import annotations

import logging
import os
import secrets
from types import TracebackType
from typing import Any

from ._cache import Snapshot, SnapshotCache, VersionedSnapshotCache
from ._events import AckEvent, EventLog
from ._objects import MeshObjects
from ._server import XdsServer
from ._sources import FileSource, Source
from ._translate import translate

__all__ = ["ControlPlane"]

log = logging.getLogger(__name__)


class ControlPlane:
    """An xDS control plane serving the Kubernetes objects in ``config`` over ADS.

    ``config`` is a file or directory of YAML/JSON (see :class:`FileSource`) or any
    :class:`Source`. The configuration is loaded by :meth:`start` (a bad one raises
    :class:`ConfigError` before anything listens) and again by :meth:`reload`. The
    gRPC server runs on its own thread, so every method is callable from sync code::

        with ControlPlane("examples/demo/config") as cp:
            bootstrap = cp.bootstrap(namespace="default")
    """

    def __init__(
        self,
        config: str | os.PathLike[str] | Source,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        cache: SnapshotCache | None = None,
    ) -> None:
        self.source: Source = (
            FileSource(config) if isinstance(config, str | os.PathLike) else config
        )
        self.cache: SnapshotCache = cache if cache is not None else VersionedSnapshotCache()
        self.events = EventLog()
        self.objects = MeshObjects()
        self._server = XdsServer(self.cache, self.events, host=host, port=port)
        self._started = False

    def __repr__(self) -> str:
        state = self.address if self._started else "stopped"
        return f"<ControlPlane {self.source!r} {state}>"

    @property
    def host(self) -> str:
        """The address the server binds to."""
        return self._server.host

    @property
    def port(self) -> int:
        """The bound port (the real one once started, even if 0 was asked for)."""
        return self._server.port

    @property
    def address(self) -> str:
        """``host:port``, usable as a gRPC target and a bootstrap ``server_uri``."""
        return self._server.address

    def start(self) -> ControlPlane:
        """Load the configuration, then start serving; returns ``self``."""
        if self._started:
            return self
        self.reload()
        self._server.start()
        self._started = True
        log.info("meshlib control plane on %s serving %r", self.address, self.source)
        return self

    def stop(self, grace: float = 1.0) -> None:
        """End every xDS stream and stop the server."""
        if self._started:
            self._server.stop(grace)
            self._started = False

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def reload(self) -> Snapshot:
        """Re-read the source and push what changed.

        On :class:`ConfigError` the previous configuration keeps serving.
        """
        objects = self.source.load()
        snapshot = self.cache.set_resources(translate(objects))
        self.objects = objects
        log.debug("snapshot version %s", snapshot.version)
        return snapshot

    def snapshot(self) -> Snapshot:
        """The snapshot currently served."""
        return self.cache.snapshot()

    def acks(self, node_id: str | None = None) -> list[AckEvent]:
        """Recorded ACKs, oldest first, optionally for one node."""
        return self.events.events(node_id, "ACK")

    def nacks(self, node_id: str | None = None) -> list[AckEvent]:
        """Recorded NACKs, oldest first, optionally for one node."""
        return self.events.events(node_id, "NACK")

    def wait_for_ack(
        self,
        node_id: str | None,
        type_url: str,
        timeout: float = 10.0,
        *,
        version: str | None = None,
    ) -> AckEvent:
        """Block until ``node_id`` (any node if None) ACKs ``type_url`` (at ``version``).

        Raises ``TimeoutError`` if no such ACK arrives in ``timeout`` seconds.
        """

        def match(e: AckEvent) -> bool:
            return (
                e.kind == "ACK"
                and e.type_url == type_url
                and (node_id is None or e.node_id == node_id)
                and (version is None or e.version == version)
            )

        return self.events.wait_for(match, timeout)

    def bootstrap(
        self,
        *,
        node_id: str | None = None,
        namespace: str = "default",
        pod: str | None = None,
        ip: str = "127.0.0.1",
    ) -> dict[str, Any]:
        """A gRPC xDS bootstrap (``GRPC_XDS_BOOTSTRAP`` JSON) pointing at this server.

        The node id is istio's ``sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local``; the pod
        name is random unless given, so each bootstrap identifies a distinct client.
        """
        pod = pod or f"client-{secrets.token_hex(3)}"
        return {
            "xds_servers": [
                {
                    "server_uri": self.address,
                    "channel_creds": [{"type": "insecure"}],
                    "server_features": ["xds_v3"],
                }
            ],
            "node": {
                "id": node_id or f"sidecar~{ip}~{pod}.{namespace}~{namespace}.svc.cluster.local",
                "metadata": {"GENERATOR": "grpc", "NAMESPACE": namespace},
            },
        }
