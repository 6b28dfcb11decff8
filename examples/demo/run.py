"""`make demo`: the control plane, three replicas, and a client, all on loopback.

Starts `meshlib control-plane` on the YAML under examples/demo/config, three uvicorn
replicas of examples/demo/backend.py on the ports their EndpointSlices name, then sends
300 requests through `Mesh.httpx_client()` and prints how the mesh spread them.
Exits non-zero if anything failed.
"""

from __future__ import annotations

import collections
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from meshlib import Mesh

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "config"
ROOT = HERE.parents[1]
TARGET = "http://reviews.default.svc.cluster.local:9080"
REQUESTS = 300


def replica_ports() -> dict[str, int]:
    """Replica name -> port, read from the EndpointSlices in the config."""
    ports = {}
    for doc in yaml.safe_load_all((CONFIG / "reviews.yaml").read_text()):
        if doc and doc["kind"] == "EndpointSlice":
            ports[doc["metadata"]["name"]] = doc["ports"][0]["port"]
    return ports


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def wait_http(url: str, proc: subprocess.Popen[Any], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url}: not ready after {timeout}s")


def start_control_plane(procs: list[subprocess.Popen[Any]]) -> str:
    cp = subprocess.Popen(
        [sys.executable, "-m", "meshlib", "control-plane", "--config", str(CONFIG), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    procs.append(cp)
    assert cp.stdout is not None
    line = cp.stdout.readline()
    if "listening on" not in line:
        raise RuntimeError(f"control plane did not start: {line!r}")
    return line.rsplit(" ", 1)[1].strip()


def main() -> int:
    procs: list[subprocess.Popen[Any]] = []
    try:
        ports = replica_ports()
        busy = [p for p in ports.values() if not port_free(p)]
        if busy:
            print(f"demo: ports {busy} are in use; free them and retry", file=sys.stderr)
            return 1
        for name, port in ports.items():
            env = {**os.environ, "REPLICA": name}
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "uvicorn",
                        "examples.demo.backend:app",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--log-level",
                        "warning",
                    ],
                    env=env,
                    cwd=ROOT,
                )
            )
        for proc, port in zip(procs, ports.values(), strict=True):
            wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        address = start_control_plane(procs)
        print(f"control plane  {address}   config {CONFIG.relative_to(ROOT)}")
        bootstrap = {
            "xds_servers": [
                {
                    "server_uri": address,
                    "channel_creds": [{"type": "insecure"}],
                    "server_features": ["xds_v3"],
                }
            ],
            "node": {
                "id": "sidecar~127.0.0.1~demo-client.default~default.svc.cluster.local",
                "metadata": {"GENERATOR": "grpc", "NAMESPACE": "default"},
            },
        }
        counts: collections.Counter[str] = collections.Counter()
        failures = 0
        started = time.perf_counter()
        with Mesh(bootstrap=bootstrap) as mesh, mesh.httpx_client(timeout=5) as client:
            for i in range(REQUESTS):
                try:
                    r = client.get(f"{TARGET}/reviews/{i}")
                    r.raise_for_status()
                    counts[r.json()["replica"]] += 1
                except httpx.HTTPError as exc:
                    failures += 1
                    print(f"request {i} failed: {exc}", file=sys.stderr)
                    if failures >= 5:
                        print("demo: giving up after 5 failures", file=sys.stderr)
                        break
        elapsed = time.perf_counter() - started
        print(f"\n{REQUESTS} requests to {TARGET} in {elapsed:.2f}s, {failures} failed\n")
        print(f"{'replica':<12}{'endpoint':<18}{'requests':>9}")
        for name, port in ports.items():
            print(f"{name:<12}{'127.0.0.1:' + str(port):<18}{counts[name]:>9}")
        ok = failures == 0 and set(counts) == set(ports)
        print("\ndemo " + ("OK" if ok else "FAILED"))
        return 0 if ok else 1
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    sys.exit(main())
