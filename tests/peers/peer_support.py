"""Real peers for the control plane: Envoy, grpcio's xDS client, and loopback backends.

* :class:`EnvoyProcess` runs ``.venv/bin/envoy`` with a bootstrap pointing at the control
  plane over ADS, its outbound listeners on ports chosen here (node metadata
  ``MESHLIB_LISTENER_PORTS``) and its admin interface on an ephemeral port.
* :class:`GrpcXdsClient` runs grpcio's own xDS client in a subprocess (grpcio reads its
  bootstrap once per process); it takes ``call <target> <n> [header=value ...]`` lines
  and answers each with a JSON summary.
* :func:`http_backends` starts one uvicorn app per workload, answering with its name, the
  path and the headers it saw; :func:`grpc_backends` does the same for gRPC.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import httpx
import uvicorn

from meshlib.controlplane import ControlPlane, spiffe_id
from tests.support import UvicornThread

ENVOY = Path(sys.executable).parent / "envoy"


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- backends --------------------------------------------------------------------------
class Seen:
    """What every backend received: (workload, path, headers), in order."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []

    def count(self, workload: str) -> int:
        return sum(1 for w, _, _ in self.requests if w == workload)


def backend_app(name: str, seen: Seen, fail_first: dict[str, int]) -> Any:
    """An ASGI app answering with its name, the path and headers; records to ``seen``."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers: dict[str, str] = {}
        for k, v in scope["headers"]:  # repeated headers are joined, as HTTP allows
            key = k.decode()
            headers[key] = f"{headers[key]},{v.decode()}" if key in headers else v.decode()
        seen.requests.append((name, scope["path"], headers))
        if "slow" in scope["path"]:
            await asyncio.sleep(1.0)
        status = 200
        if fail_first.get(name, 0) > 0:
            fail_first[name] -= 1
            status = 503
        body = json.dumps({"workload": name, "path": scope["path"], "headers": headers})
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"x-backend", name.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body.encode()})

    return app


@contextmanager
def http_backends(
    names: Iterable[str], fail_first: dict[str, int] | None = None
) -> Iterator[tuple[dict[str, int], Seen]]:
    """Start one HTTP backend per name; yields (name -> port, what they saw)."""
    seen = Seen()
    failures = fail_first if fail_first is not None else {}
    servers = {n: UvicornThread(backend_app(n, seen, failures)).start() for n in names}
    try:
        yield {n: s.port for n, s in servers.items()}, seen
    finally:
        for s in servers.values():
            s.stop()


@contextmanager
def grpc_backends(names: Iterable[str]) -> Iterator[dict[str, int]]:
    """Start one gRPC server per name whose /test.Echo/Echo answers with the name."""
    servers = {}
    ports = {}
    for name in names:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handler = grpc.method_handlers_generic_handler(
            "test.Echo",
            {"Echo": grpc.unary_unary_rpc_method_handler(lambda req, ctx, n=name: n.encode())},
        )
        server.add_generic_rpc_handlers((handler,))
        ports[name] = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers[name] = server
    try:
        yield ports
    finally:
        for server in servers.values():
            server.stop(0)


class TlsUvicornThread(UvicornThread):
    """A uvicorn server on 127.0.0.1 with TLS (``ssl_*`` arguments of uvicorn.Config)."""

    def __init__(self, app: Any, **ssl_options: Any) -> None:
        super().__init__(app)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", **ssl_options
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)


# -- grpcio's xDS client ---------------------------------------------------------------
_CLIENT = textwrap.dedent(
    """
    import collections, json, sys
    import grpc

    channels = {}
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        _, target, n, *headers = cmd
        metadata = tuple(tuple(h.split("=", 1)) for h in headers)
        if target not in channels:
            channels[target] = grpc.insecure_channel(target)
        echo = channels[target].unary_unary("/test.Echo/Echo")
        counts, errors = collections.Counter(), collections.Counter()
        for _ in range(int(n)):
            try:
                counts[echo(b"ping", timeout=5, metadata=metadata).decode()] += 1
            except grpc.RpcError as err:
                errors[str(err.code())] += 1
        print(json.dumps({"counts": counts, "errors": errors}), flush=True)
    """
)


class GrpcXdsClient:
    """grpcio's xDS client in a subprocess with its own bootstrap."""

    def __init__(self, bootstrap: dict[str, Any], tmp_path: Path) -> None:
        path = tmp_path / f"grpc-bootstrap-{time.monotonic_ns()}.json"
        path.write_text(json.dumps(bootstrap))
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_")}
        env.update(GRPC_XDS_BOOTSTRAP=str(path), GRPC_VERBOSITY="ERROR")
        self.node_id = bootstrap["node"]["id"]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CLIENT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def call(self, target: str, n: int, **headers: str) -> tuple[Counter[str], Counter[str]]:
        """(answers by backend, errors by status code) of ``n`` calls."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        extra = "".join(f" {k.replace('_', '-')}={v}" for k, v in headers.items())
        self.proc.stdin.write(f"call {target} {n}{extra}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"xDS client died: {self.proc.communicate()[1][-3000:]}")
        result = json.loads(line)
        return Counter(result["counts"]), Counter(result["errors"])

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.communicate("quit\n", timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- Envoy -----------------------------------------------------------------------------
def envoy_bootstrap(
    cp: ControlPlane,
    node_id: str,
    listener_ports: dict[int, int],
    *,
    namespace: str = "default",
    delta: bool = False,
    token: str | None = None,
) -> dict[str, Any]:
    """An Envoy bootstrap: ADS to ``cp``, sidecar node metadata, admin on 127.0.0.1.

    ``token`` (a bootstrap token) authenticates the ADS stream, as its SDS secrets need.
    """
    ads = {"ads": {}, "resource_api_version": "V3"}
    grpc_service: dict[str, Any] = {"envoy_grpc": {"cluster_name": "xds"}}
    if token is not None:
        grpc_service["initial_metadata"] = [{"key": "authorization", "value": f"Bearer {token}"}]
    return {
        "node": {
            "id": node_id,
            "cluster": "test",
            "metadata": {
                "NAMESPACE": namespace,
                "MESHLIB_LISTENER_PORTS": {str(k): v for k, v in listener_ports.items()},
            },
        },
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if delta else "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [grpc_service],
            },
            "cds_config": ads,
            "lds_config": ads,
        },
        "static_resources": {
            "clusters": [
                {
                    "name": "xds",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/"
                            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                    "load_assignment": {
                        "cluster_name": "xds",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": cp.host,
                                                    "port_value": cp.port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ]
        },
    }


class EnvoyProcess:
    """A real Envoy against the control plane; ``port(9080)`` is its 9080 listener."""

    def __init__(
        self,
        cp: ControlPlane,
        tmp_path: Path,
        service_ports: Iterable[int] = (9080,),
        *,
        node_id: str = "sidecar~127.0.0.1~envoy-0.default~default.svc.cluster.local",
        delta: bool = False,
    ) -> None:
        self.node_id = node_id
        self.listener_ports = {p: free_port() for p in service_ports}
        # A control plane with a CA serves SDS secrets only to an authenticated stream.
        token = cp.tokens.issue(spiffe_id("default", "default")) if cp.tokens else None
        boot = envoy_bootstrap(cp, node_id, self.listener_ports, delta=delta, token=token)
        directory = tmp_path / f"envoy-{time.monotonic_ns()}"
        directory.mkdir()
        (directory / "bootstrap.json").write_text(json.dumps(boot))
        self.admin_file = directory / "admin-address"
        self.log = directory / "envoy.log"
        self._log_handle = self.log.open("w")
        self.proc = subprocess.Popen(
            [
                str(ENVOY),
                "-c",
                str(directory / "bootstrap.json"),
                "--admin-address-path",
                str(self.admin_file),
                "--base-id",
                str(os.getpid() % 1000 * 100 + free_port() % 100),
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "-l",
                "warning",
            ],
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
        )
        self.admin = ""

    def wait_ready(self, timeout: float = 20.0) -> EnvoyProcess:
        """Wait until the admin interface is up and every listener is active."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"envoy exited: {self.log.read_text()[-3000:]}")
            if not self.admin and self.admin_file.exists():
                self.admin = self.admin_file.read_text().strip()
            if self.admin:
                try:
                    listeners = httpx.get(f"http://{self.admin}/listeners?format=json").json()
                    bound = {
                        s["local_address"]["socket_address"]["port_value"]
                        for s in listeners.get("listener_statuses", [])
                        if "local_address" in s
                    }
                    if set(self.listener_ports.values()) <= bound:
                        return self
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
            time.sleep(0.1)
        raise AssertionError(f"envoy not ready: {self.log.read_text()[-3000:]}")

    def port(self, service_port: int = 9080) -> int:
        return self.listener_ports[service_port]

    def config_dump(self) -> dict[str, Any]:
        result: dict[str, Any] = httpx.get(f"http://{self.admin}/config_dump").json()
        return result

    def rejected(self) -> list[str]:
        """Update-rejection counters that are non-zero (Envoy's NACKs) from /stats."""
        text = httpx.get(f"http://{self.admin}/stats?filter=update_rejected").text
        return [line for line in text.splitlines() if not line.endswith(": 0")]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_handle.close()
