"""``meshlib demo --serve``: BookInfo left running, for a browser and for your own code.

A browser has no mesh certificate, so as in Istio it comes in through an ingress
gateway: a plain HTTP server on loopback that forwards every request to productpage
through the mesh (its own mesh client, ``istio-ingressgateway``).
"""

from __future__ import annotations

import dataclasses
import signal
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from rich.console import Console

from meshlib import Mesh

from ._apps import Timing
from ._bookinfo import BookInfo, start_pod
from ._platform import DEFAULT_PORTS, SERVICE_PORT, WORKLOADS, istio_file, istio_files
from ._servers import WerkzeugServer

__all__ = ["ingress_app", "run_pod", "serve"]

_HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade",
    "content-length", "content-encoding", "host",
}


def ingress_app(client: httpx.Client, upstream: str = f"http://productpage:{SERVICE_PORT}") -> Any:
    """A WSGI app forwarding every request to ``upstream`` with ``client``."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        query = environ.get("QUERY_STRING", "")
        url = upstream + environ.get("PATH_INFO", "/") + (f"?{query}" if query else "")
        headers = {
            key[5:].replace("_", "-").lower(): value
            for key, value in environ.items()
            if key.startswith("HTTP_") and key[5:].replace("_", "-").lower() not in _HOP_BY_HOP
        }
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        try:
            r = client.request(environ["REQUEST_METHOD"], url, headers=headers, content=body)
        except Exception as exc:  # the mesh refused: say so, as a gateway would
            message = f"ingress: {type(exc).__name__}: {exc}\n".encode()
            start_response("503 Service Unavailable", [("content-type", "text/plain")])
            return [message]
        out = [(k, v) for k, v in r.headers.multi_items() if k.lower() not in _HOP_BY_HOP]
        out.append(("content-length", str(len(r.content))))
        start_response(f"{r.status_code} {r.reason_phrase}", out)
        return [r.content]

    return app


def _until_signalled(done: threading.Event) -> None:
    previous: dict[int, Any] = {}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not done.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_pod(
    workload: str,
    *,
    port: int = SERVICE_PORT,
    listen: str = "0.0.0.0",
    admin_port: int = 15000,
    stop: threading.Event | None = None,
) -> int:
    """Run one BookInfo workload (``reviews-v2``...) as a pod does on Kubernetes: the
    bootstrap from ``GRPC_XDS_BOOTSTRAP`` (istio-agent's grpc-agent template writes it),
    its server listener for the pod's IP (``INSTANCE_IPS``), serving on ``listen:port``."""
    kinds = {f"{w.service}-{w.version}": w for w in reversed(WORKLOADS)}
    if workload not in kinds:
        raise ValueError(f"--workload {workload!r}: one of {', '.join(sorted(kinds))}")
    mesh = Mesh()
    node = mesh.bootstrap.node
    address = str(node.metadata.get("INSTANCE_IPS", "127.0.0.1")).split(",")[0]
    parts = node.id.split("~")  # sidecar~IP~POD.NS~NS.svc.cluster.local
    name = parts[2].split(".")[0] if len(parts) == 4 else workload
    w = dataclasses.replace(kinds[workload], pod=name)
    pod = start_pod(w, mesh, port, Timing(), address=address, listen=listen)
    admin = mesh.admin(port=admin_port)
    print(f"meshlib demo: {name} ({workload}) serving {listen}:{port} as {address}:{port}; "
          f"admin {admin.url}", flush=True)
    try:
        if stop is None:
            _until_signalled(threading.Event())
        else:
            stop.wait()
    finally:
        assert pod.server is not None
        pod.server.stop()
        for close in pod.closers:
            close()
        admin.stop()
        mesh.close()
    return 0


def serve(
    *,
    xds: str | None = None,
    ca_dir: str | Path | None = None,
    ingress_port: int = 8080,
    admin_port: int = 15000,
    ports: Mapping[str, int] | None = None,
    ready: Callable[[BookInfo, str], None] | None = None,
    console: Console | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Run BookInfo until SIGINT/SIGTERM (or ``stop`` is set), on examples/bookinfo's ports
    unless ``ports`` says otherwise. ``ready(bookinfo, productpage_url)`` is called once
    everything serves."""
    console = console or Console()
    done = stop or threading.Event()
    bookinfo = BookInfo(
        ports=ports or DEFAULT_PORTS,
        xds=xds,
        ca_dir=ca_dir,
        admin_ports={"productpage-v1": admin_port},
    )
    with console.status("starting BookInfo"):
        bookinfo.start()
    ingress = None
    try:
        if bookinfo.control_plane is not None:
            for name in ("destination-rule-all.yaml", "virtual-service-all-v1.yaml"):
                bookinfo.apply(istio_file(name))
        client = bookinfo.client(timeout=30, follow_redirects=False)
        ingress = WerkzeugServer(ingress_app(client), ingress_port)
        ingress.start(None)
        _banner(console, bookinfo, ingress.port)
        if ready is not None:
            ready(bookinfo, f"http://127.0.0.1:{ingress.port}/productpage")
        if stop is None:
            _until_signalled(done)
        else:
            done.wait()
        console.print("stopping BookInfo")
    finally:
        if ingress is not None:
            ingress.stop()
        bookinfo.stop()
    return 0


def _banner(console: Console, bookinfo: BookInfo, ingress_port: int) -> None:
    admins = {name: pod.admin.url for name, pod in bookinfo.pods.items() if pod.admin}
    console.print(f"[bold]BookInfo is running[/] (control plane {bookinfo.xds})")
    console.print(f"  productpage      http://127.0.0.1:{ingress_port}/productpage"
                  "   (sign in as jason to see routing by user)")
    console.print(f"  admin dashboard  {admins['productpage-v1']}/   (productpage's mesh)")
    for name, url in admins.items():
        if name != "productpage-v1":
            console.print(f"                   {url}/   ({name})", style="dim")
    if bookinfo.control_plane is not None:
        console.print(f"  config folder    {bookinfo.config_dir}  (watched; one file per object)")
    console.print(f"  Istio's tour files: {istio_files()}")
    if bookinfo.control_plane is not None:
        console.print("  apply one (kubectl apply semantics, e.g. jason to reviews v2):\n"
                      f"    cp {istio_files() / 'virtual-service-reviews-test-v2.yaml'} "
                      f"{bookinfo.config_dir / 'virtualservice-default-reviews.yaml'}",
                      soft_wrap=True)
    console.print("Ctrl-C stops it.")
