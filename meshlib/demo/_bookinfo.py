"""BookInfo on loopback: a CA, the control plane, seven pods and two mesh clients.

Every pod has its own :class:`~meshlib.Mesh` (its own node id, certificate and xDS
stream), serves behind meshlib's inbound middleware (``MeshInbound``: mTLS mode and
AuthorizationPolicy from its server listener) and calls the next service through the
mesh. :meth:`BookInfo.apply` is ``kubectl apply -f FILE`` against the running control
plane: each object is written into its watched folder, last applied wins by
kind/namespace/name.
"""

from __future__ import annotations

import re
import socket
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from meshlib import Mesh

from ._apps import (
    Timing,
    WorkloadState,
    details_app,
    productpage_app,
    ratings_app,
    reviews_app,
)
from ._platform import CLIENTS, DEFAULT_PORTS, NAMESPACE, WORKLOADS, Workload, write_platform
from ._servers import FollowingServer, UvicornServer, WerkzeugServer

__all__ = ["BookInfo", "Pod", "free_ports", "scale_durations", "start_pod"]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_KEYS = ("fixedDelay", "timeout", "perTryTimeout")


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (bound and released at once)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def scale_durations(doc: Any, scale: float) -> Any:
    """A copy of ``doc`` with its delays and timeouts multiplied by ``scale``."""
    if isinstance(doc, dict):
        out = {}
        for key, value in doc.items():
            m = _DURATION.match(value) if isinstance(value, str) else None
            if key in _DURATION_KEYS and m:
                seconds = float(m.group(1)) * _UNITS[m.group(2)] * scale
                out[key] = f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
            else:
                out[key] = scale_durations(value, scale)
        return out
    if isinstance(doc, list):
        return [scale_durations(v, scale) for v in doc]
    return doc


@dataclass
class Pod:
    """One running workload (or mesh client): its mesh, state and server."""

    name: str
    mesh: Mesh
    state: WorkloadState | None = None
    server: FollowingServer | None = None
    port: int = 0
    admin: Any = None
    closers: list[Any] = field(default_factory=list)


class BookInfo:
    """Start with :meth:`start` (or as a context manager); :meth:`stop` ends everything.

    ``xds`` (``host:port``) and ``ca_dir`` use a control plane that is already running
    (``meshlib control-plane --config examples/bookinfo/ --ca-dir ca/``); otherwise an
    embedded one watches a fresh folder seeded with BookInfo's platform objects. ``ports``
    maps pod names to ports (default: free ones; ``DEFAULT_PORTS`` are examples/bookinfo's).
    ``timing`` scales the applications' own timeouts; ``scale`` every delay and timeout
    in applied files.
    """

    def __init__(
        self,
        *,
        ports: Mapping[str, int] | None = None,
        xds: str | None = None,
        ca_dir: str | Path | None = None,
        scale: float = 1.0,
        admin_ports: Mapping[str, int] | None = None,
        workdir: str | Path | None = None,
    ) -> None:
        if xds is not None and ca_dir is None:
            raise ValueError("BookInfo(xds=...) needs the control plane's ca_dir")
        self._tmp = tempfile.TemporaryDirectory(prefix="meshlib-bookinfo-")
        self.workdir = Path(workdir) if workdir else Path(self._tmp.name)
        self.scale = scale
        self.timing = Timing(scale)
        self.xds = xds
        self.ca_dir = Path(ca_dir) if ca_dir else self.workdir / "ca"
        self.config_dir = self.workdir / "config"
        if ports is None:
            ports = (
                DEFAULT_PORTS
                if xds
                else dict(zip(DEFAULT_PORTS, free_ports(len(DEFAULT_PORTS)), strict=True))
            )
        self.ports = dict(ports)
        self.admin_ports = dict(admin_ports or {})
        self.control_plane: Any = None
        self.pods: dict[str, Pod] = {}

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> BookInfo:
        from meshlib.controlplane import CertificateAuthority, ControlPlane

        self.ca = CertificateAuthority(self.ca_dir)
        if self.xds is None:
            write_platform(self.config_dir, self.ports, with_routing=False)
            self.control_plane = ControlPlane(
                self.config_dir, ca=self.ca, watch=True, debounce=0.05
            ).start()
            self.xds = self.control_plane.address
        try:
            for pod, account in CLIENTS.items():
                self.pods[pod] = self._client(pod, account)
            for w in sorted(WORKLOADS, key=_start_order):
                self.pods[w.pod] = self._workload(w)
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> BookInfo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        for pod in reversed(list(self.pods.values())):
            if pod.server is not None:
                pod.server.stop()
            for close in pod.closers:
                close()
            if pod.admin is not None:
                pod.admin.stop()
            pod.mesh.close()
        self.pods.clear()
        if self.control_plane is not None:
            self.control_plane.stop()
            self.control_plane = None
        self._tmp.cleanup()

    # -- pods ------------------------------------------------------------------------
    def _mesh(self, pod: str, account: str, labels: Mapping[str, str]) -> Mesh:
        from meshlib.cli import build_bootstrap  # type: ignore[attr-defined]
        from meshlib.controlplane import spiffe_id

        assert self.xds is not None
        cert_dir = self.workdir / "certs" / pod
        self.ca.write_workload_files(spiffe_id(NAMESPACE, account), cert_dir, ttl=86400)
        bootstrap = build_bootstrap(
            self.xds,
            pod=pod,
            namespace=NAMESPACE,
            service_account=account,
            labels=dict(labels),
            cert_dir=str(cert_dir),
        )
        return Mesh(bootstrap=bootstrap)

    def _client(self, pod: str, account: str) -> Pod:
        mesh = self._mesh(pod, account, {"app": pod})
        out = Pod(pod, mesh)
        out.admin = mesh.admin(port=self.admin_ports.get(pod, 0))
        return out

    def _workload(self, w: Workload) -> Pod:
        mesh = self._mesh(w.pod, w.service_account, w.labels)
        pod = start_pod(w, mesh, self.ports[w.pod], self.timing)
        pod.admin = mesh.admin(port=self.admin_ports.get(w.pod, 0))
        return pod

    def state(self, pod: str) -> WorkloadState:
        """The served-request counters and fault switch of ``pod``."""
        state = self.pods[pod].state
        assert state is not None, f"{pod} is a client, not a workload"
        return state

    def client(self, pod: str = "istio-ingressgateway", **kwargs: Any) -> httpx.Client:
        """An httpx client through ``pod``'s mesh (the ingress gateway by default)."""
        return self.pods[pod].mesh.httpx_client(**kwargs)

    def stats(self, pod: str, pattern: str = "") -> dict[str, int]:
        """``pod``'s Envoy-style counters (``/stats?format=json``, names matching the
        regular expression ``pattern``) by name."""
        admin = self.pods[pod].admin
        params = {"format": "json", **({"filter": pattern} if pattern else {})}
        doc = httpx.get(f"{admin.url}/stats", params=params, timeout=5).json()
        out: dict[str, int] = {}
        for item in doc.get("stats", []):
            value = str(item.get("value", ""))
            if value.isdigit():
                out[item["name"]] = int(value)
        return out

    # -- configuration ---------------------------------------------------------------
    def apply(self, path: Path, timeout: float = 10.0) -> list[str]:
        """``kubectl apply -f path`` into the watched folder; returns "Kind ns/name" of each
        object. Waits until the control plane serves them and the mesh has settled."""
        applied: list[str] = []
        self.config_dir.mkdir(parents=True, exist_ok=True)
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            meta = doc.setdefault("metadata", {})
            namespace = meta.setdefault("namespace", NAMESPACE)
            key = f"{doc['kind']}-{namespace}-{meta['name']}".lower()
            if self.scale != 1.0:
                doc = scale_durations(doc, self.scale)
            target = self.config_dir / f"{key}.yaml"
            tmp = target.with_suffix(".tmp")
            tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
            tmp.replace(target)
            applied.append(f"{doc['kind']} {namespace}/{meta['name']}")
        self.settle(timeout)
        return applied

    def settle(self, timeout: float = 10.0, quiet: float = 0.3) -> None:
        """Reload the control plane and wait until the clients have answered its pushes
        and every server follows its listener's mTLS mode."""
        cp = self.control_plane
        if cp is None:
            time.sleep(1.0)
            return
        version = cp.reload().version
        deadline = time.monotonic() + timeout
        seen, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            # A change reaches only the clients subscribed to what changed: wait until
            # every push has been answered (no new ACK or NACK for ``quiet`` seconds).
            answered = len(cp.acks()) + len(cp.nacks())
            if answered != seen:
                seen, since = answered, time.monotonic()
            elif time.monotonic() - since >= quiet and self._servers_follow():
                return
            time.sleep(0.05)
        raise TimeoutError(f"the mesh did not settle on snapshot {version} in {timeout}s")

    def _servers_follow(self) -> bool:
        for pod in self.pods.values():
            if pod.server is None:
                continue
            state = pod.server.inbound.state
            if (state.mode == "STRICT") != pod.server.tls:
                return False
        return True


def start_pod(
    w: Workload,
    mesh: Mesh,
    port: int,
    timing: Timing,
    *,
    address: str = "127.0.0.1",
    listen: str | None = None,
) -> Pod:
    """Serve workload ``w`` with ``mesh`` on ``listen`` (default ``address``):``port``, behind
    the inbound side of its server listener for ``address:port``."""
    from meshlib.integrations import MeshInbound

    out = Pod(w.pod, mesh, WorkloadState(w), port=port)
    inbound = MeshInbound.for_mesh(mesh, port, host=address, workload=w.pod)
    out.closers.append(inbound.close)
    client = mesh.httpx_client()
    out.closers.append(client.close)
    assert out.state is not None
    bind = listen or address
    server: UvicornServer | WerkzeugServer
    if w.service == "productpage":
        from meshlib.integrations.flask import MeshFlask

        flask_app = productpage_app(out.state, client, timing)
        MeshFlask(flask_app, inbound=inbound)
        server = WerkzeugServer(flask_app, port, bind)
    else:
        from meshlib.integrations.asgi import MeshMiddleware

        if w.service == "reviews":
            app = reviews_app(out.state, client, timing)
        elif w.service == "details":
            app = details_app(out.state)
        else:
            app = ratings_app(out.state)
        app.add_middleware(MeshMiddleware, inbound=inbound)
        server = UvicornServer(app, port, bind)
    out.server = FollowingServer(server, inbound).start()
    return out


def _start_order(w: Workload) -> int:
    # Callees first, so a caller's first request finds them listening.
    return ("ratings", "details", "reviews", "productpage").index(w.service)
