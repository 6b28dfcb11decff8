"""The embedded control plane: a source, translation, a snapshot cache and an ADS server."""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from types import TracebackType
from typing import Any

from ._apply import write_status
from ._workload import build_bootstrap
from .ca._serving import ca_serving
from .objects._fields import ConfigError
from .objects._kubernetes import MeshObjects
from .sources._files import FileSource, LoadResult, Source, assemble
from .translate._translate import translate
from .xds._cache import Snapshot, SnapshotCache, VersionedSnapshotCache
from .xds._events import AckEvent, EventLog
from .xds._server import XdsServer
from .xds._syncz import SyncServer, sync_status

__all__ = ["ControlPlane"]

log = logging.getLogger(__name__)


class ControlPlane:
    """An xDS control plane serving the Kubernetes objects in ``config`` over ADS.

    ``config`` is a file or directory of YAML/JSON (see :class:`FileSource`) or any
    :class:`Source`. The configuration is loaded by :meth:`start` (a bad one raises
    :class:`ConfigError` before anything listens) and again by :meth:`reload`. The
    gRPC server runs on its own thread, so every method is callable from sync code::

        with ControlPlane("examples/bookinfo", watch=True) as cp:
            bootstrap = cp.bootstrap(namespace="default")

    With ``watch=True`` the source's files are polled every ``poll_interval`` seconds;
    an edit is applied once the files have been quiet for ``debounce`` seconds (so a
    burst of writes is one push). ``ca`` (a ``CertificateAuthority``) lets Envoy nodes
    fetch SDS certificates, and serves the CA's ``CreateCertificate`` to authenticated
    callers (see :mod:`meshlib.controlplane.ca`); ``token_authenticators`` check bootstrap
    tokens (default: the control plane's own :class:`BootstrapTokens`, ``cp.tokens``);
    ``secure_port`` (0 picks one) adds an mTLS port, :attr:`secure_address`.
    """

    def __init__(
        self,
        config: str | os.PathLike[str] | Source,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        cache: SnapshotCache | None = None,
        ca: Any = None,
        watch: bool = False,
        poll_interval: float = 0.05,
        debounce: float = 0.1,
        token_authenticators: Any = None,
        secure_port: int | None = None,
    ) -> None:
        self.source: Source = (
            FileSource(config) if isinstance(config, str | os.PathLike) else config
        )
        self.cache: SnapshotCache = cache if cache is not None else VersionedSnapshotCache()
        self.events = EventLog()
        self.objects = MeshObjects()
        self.ca = ca
        #: Problems of the last load or translation (rejected objects, unknown hosts).
        self.problems: tuple[str, ...] = ()
        self._good: dict[str, Any] = {}
        serving = ca_serving(ca, token_authenticators) if ca is not None else None
        #: The bootstrap-token issuer of the embedded file mode (None without a CA).
        self.tokens = serving.tokens if serving is not None else None
        self._server = XdsServer(
            self.cache,
            self.events,
            host=host,
            port=port,
            authenticator=serving.authenticator if serving else None,
            handlers=(serving.service.handler(),) if serving else (),
            secure_port=secure_port if serving else None,
            credentials=serving.credentials if serving and secure_port is not None else None,
        )
        self._started = False
        self._watch = watch
        self._poll_interval = poll_interval
        self._debounce = debounce
        self._stop_watch = threading.Event()
        self._watcher: threading.Thread | None = None
        self._reload_lock = threading.Lock()

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

    def sync_status(self) -> list[dict[str, Any]]:
        """Every connected client: node id, and per type the version sent and the
        client's ACK or NACK (with its error), as istiod's ``/debug/syncz``."""
        return sync_status(self._server.servicer, self.events)

    def debug_server(self, host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> SyncServer:
        """A started HTTP server for ``/debug/syncz`` (``meshlib proxy-status`` reads
        it); loopback only unless ``allow_remote=True``. Stop it when done."""
        return SyncServer(self.sync_status, host, port, **kwargs).start()

    @property
    def secure_address(self) -> str | None:
        """``host:port`` of the mTLS port (``secure_port``), else None."""
        return self._server.secure_address

    def start(self) -> ControlPlane:
        """Load the configuration, then start serving; returns ``self``."""
        if self._started:
            return self
        fingerprint = self._fingerprint()
        live = getattr(self.source, "watch", None)
        try:
            self.reload()
        except ConfigError as err:
            # Files fail fast: the operator is at the keyboard. A live cluster keeps running
            # with one bad object in it, so serve the valid rest and report the problems.
            if not callable(live):
                self._close_source()
                raise
            log.error("config problems (the rest is served):\n%s", err)
        self._server.start()
        self._started = True
        if callable(live):  # a LiveSource tells us when its objects change
            live(self._reload_quietly)
        if self._watch:
            self._stop_watch.clear()
            self._watcher = threading.Thread(
                target=self._watch_loop, args=(fingerprint,), name="meshlib-cp-watch", daemon=True
            )
            self._watcher.start()
        log.info("meshlib control plane on %s serving %r", self.address, self.source)
        return self

    def _close_source(self) -> None:
        close = getattr(self.source, "close", None)
        if callable(close):
            close()

    def stop(self, grace: float = 1.0) -> None:
        """Stop watching, end every xDS stream and stop the server."""
        self._stop_watch.set()
        if self._watcher is not None:
            self._watcher.join(10)
            self._watcher = None
        if self._started:
            self._close_source()
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

        Invalid objects are rejected one by one: the valid ones are applied and a
        rejected object keeps its last good version (if it had one); then
        :class:`ConfigError` lists every rejected object. If the source cannot be read
        at all, nothing changes.
        """
        with self._reload_lock:
            load = getattr(self.source, "load_lenient", None)
            if load is None:
                result = LoadResult(_by_key(self.source.load()))
            else:
                result = load()
                assert isinstance(result, LoadResult)
            merged = dict(result.objects)
            for key in result.rejected:
                if key in self._good and key not in merged:
                    merged[key] = self._good[key]
            objects = assemble(merged)
            resources = translate(objects, ca=self.ca)
            snapshot = self.cache.set_resources(resources)
            self._good, self.objects = merged, objects
            self.problems = result.problems + resources.problems
            if self._watch and isinstance(self.source, FileSource) and self.source.path.is_dir():
                # How ``meshlib apply`` knows its change is served (see _apply).
                write_status(self.source.path, result, str(snapshot.version), self.problems)
        # Loading nothing is almost always a wrong path: say so above INFO.
        level = logging.INFO if result.objects else logging.WARNING
        log.log(
            level,
            "config %s: loaded %s; serving snapshot version %s",
            self.source,
            result.summary(),
            snapshot.version,
        )
        if result.problems:
            raise ConfigError("\n".join(result.problems), result.problems)
        return snapshot

    def _fingerprint(self) -> object:
        fingerprint = getattr(self.source, "fingerprint", None)
        return fingerprint() if fingerprint is not None else None

    def _watch_loop(self, seen: object) -> None:
        while not self._stop_watch.wait(self._poll_interval):
            current = self._fingerprint()
            if current == seen:
                continue
            # Debounce: wait until the files stop changing, then apply them once.
            while not self._stop_watch.wait(self._debounce):
                latest = self._fingerprint()
                if latest == current:
                    break
                current = latest
            seen = current
            self._reload_quietly()

    def _reload_quietly(self) -> None:
        try:
            self.reload()
        except ConfigError as err:
            log.warning("config rejected (the last good version keeps serving):\n%s", err)
        except Exception:
            log.exception("config reload failed")

    def wait_for_version(self, version: int, timeout: float = 10.0) -> Snapshot:
        """Block until the served snapshot's version is at least ``version``."""
        deadline = time.monotonic() + timeout
        while True:
            snap = self.cache.snapshot()
            if int(snap.version) >= version:
                return snap
            if time.monotonic() > deadline:
                raise TimeoutError(f"snapshot version {snap.version} < {version}")
            time.sleep(0.02)

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
        cert_dir: str | None = None,
    ) -> dict[str, Any]:
        """A gRPC xDS bootstrap (``GRPC_XDS_BOOTSTRAP`` JSON) pointing at this server.

        The node id is istio's ``sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local``; the pod
        name is random unless given, so each bootstrap identifies a distinct client.
        ``cert_dir`` adds the ``default`` file_watcher certificate provider over it.
        """
        pod = pod or f"client-{secrets.token_hex(3)}"
        return build_bootstrap(
            self.address,
            node_id=node_id or f"sidecar~{ip}~{pod}.{namespace}~{namespace}.svc.cluster.local",
            namespace=namespace,
            ip=ip,
            cert_dir=cert_dir,
        )


def _by_key(objects: MeshObjects) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for group in vars(objects).values():
        for obj in group:
            kind = "EndpointSlice" if type(obj).__name__ == "EndpointSlice" else type(obj).__name__
            out[f"{kind} {obj.namespace}/{obj.name}"] = obj
    return out
