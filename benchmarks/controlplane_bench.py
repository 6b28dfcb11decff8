"""Control plane at scale: a 100-service config pushed to 200 connected clients.

The control plane runs as ``meshlib control-plane`` in its own process (so its CPU and
memory are its own), watching a directory with 100 Services, each with 3 endpoints, a
DestinationRule (two subsets) and a VirtualService (a weighted split). 200 ADS clients
(grpc.aio streams in this process, proxyless nodes) each subscribe to every listener,
route configuration, cluster and endpoint assignment, and ACK every response.

Measured: time until every client has ACKed the initial config; then, for each edit
(every VirtualService's weights and every EndpointSlice's ports change), the time from
writing the files until all 200 clients have ACKed the new version of every type that
changed, including the watcher's debounce; and the control plane's CPU seconds per
push and resident memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import yaml
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2

from ._harness import Row, check, cpu_seconds, free_port, percentile, row

__all__ = ["run"]

SERVICES = 100
CLIENTS = 200
_DEBOUNCE = 0.05
_LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
_RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
_CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
_EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"


def _config(directory: Path, round_: int) -> None:
    """Write the 100-service config; ``round_`` varies weights and endpoint ports."""
    docs: list[dict[str, Any]] = []
    for i in range(SERVICES):
        name = f"svc-{i:03d}"
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"ports": [{"name": "http", "port": 8080}]},
            }
        )
        for v in ("v1", "v2"):
            docs.append(
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": f"{name}-{v}",
                        "namespace": "default",
                        "labels": {"kubernetes.io/service-name": name, "version": v},
                    },
                    "addressType": "IPv4",
                    "endpoints": [
                        {"addresses": [f"10.{i // 250}.{i % 250}.{k}"]} for k in range(1, 4)
                    ],
                    "ports": [{"name": "http", "port": 20000 + round_}],
                }
            )
        docs.append(
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "DestinationRule",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {
                    "host": name,
                    "subsets": [
                        {"name": "v1", "labels": {"version": "v1"}},
                        {"name": "v2", "labels": {"version": "v2"}},
                    ],
                },
            }
        )
        w = 10 + round_ % 80
        docs.append(
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "VirtualService",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {
                    "hosts": [name],
                    "http": [
                        {
                            "route": [
                                {"destination": {"host": name, "subset": "v1"}, "weight": w},
                                {"destination": {"host": name, "subset": "v2"}, "weight": 100 - w},
                            ]
                        }
                    ],
                },
            }
        )
    tmp = directory / ".mesh.yaml.tmp"
    tmp.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    os.replace(tmp, directory / "mesh.yaml")  # one atomic edit


def _names() -> dict[str, list[str]]:
    hosts = [f"svc-{i:03d}.default.svc.cluster.local" for i in range(SERVICES)]
    clusters = [f"outbound|8080|{s}|{h}" for h in hosts for s in ("", "v1", "v2")]
    return {
        _LDS: [f"{h}:8080" for h in hosts],
        _RDS: [f"outbound|8080||{h}" for h in hosts],
        _CDS: clusters,
        _EDS: clusters,
    }


class _Client:
    """One ADS stream that subscribes to everything and ACKs every response."""

    def __init__(self, index: int) -> None:
        self.node = base_pb2.Node(id=f"sidecar~10.9.0.{index}~bench-{index}.default~default")
        self.node.metadata.CopyFrom(
            struct_pb2.Struct(fields={"GENERATOR": struct_pb2.Value(string_value="grpc")})
        )
        self.versions: dict[str, str] = {}
        self.changed = asyncio.Event()

    async def run(self, address: str, stop: asyncio.Event) -> None:
        names = _names()
        requests: asyncio.Queue[discovery_pb2.DiscoveryRequest] = asyncio.Queue()
        for i, type_url in enumerate((_CDS, _EDS, _LDS, _RDS)):
            req = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=names[type_url])
            if i == 0:
                req.node.CopyFrom(self.node)
            requests.put_nowait(req)

        async def outgoing() -> Any:
            while True:
                yield await requests.get()

        async with grpc.aio.insecure_channel(address) as channel:
            stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
            call = stub.StreamAggregatedResources(outgoing())
            reader = asyncio.ensure_future(self._read(call, requests, names))
            await stop.wait()
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await reader

    async def _read(
        self,
        call: Any,
        requests: asyncio.Queue[discovery_pb2.DiscoveryRequest],
        names: dict[str, list[str]],
    ) -> None:
        async for response in call:
            requests.put_nowait(
                discovery_pb2.DiscoveryRequest(
                    type_url=response.type_url,
                    resource_names=names[response.type_url],
                    version_info=response.version_info,
                    response_nonce=response.nonce,
                )
            )
            self.versions[response.type_url] = response.version_info
            self.changed.set()


def _rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of ``pid`` in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


@contextlib.contextmanager
def _control_plane(directory: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    port = free_port()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "meshlib.cli", "control-plane"),
            *("--config", str(directory), "--port", str(port), "--debounce", str(_DEBOUNCE)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "listening on" not in line:
            raise RuntimeError(f"control plane did not start: {proc.communicate()[1][-2000:]}")
        yield proc, f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


async def _all_at(
    clients: list[_Client], version: str, types: tuple[str, ...], limit: float
) -> None:
    deadline = time.monotonic() + limit
    for client in clients:
        while any(client.versions.get(t) != version for t in types):
            client.changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"client {client.node.id} did not reach version {version}")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(client.changed.wait(), remaining)


async def _measure(quick: bool) -> dict[str, Any]:
    edits = 2 if quick else 6
    n_clients = CLIENTS
    with tempfile.TemporaryDirectory(prefix="cp-bench-") as tmp:
        directory = Path(tmp)
        _config(directory, 0)
        with _control_plane(directory) as (proc, address):
            stop = asyncio.Event()
            clients = [_Client(i) for i in range(n_clients)]
            start = time.perf_counter()
            tasks = [asyncio.ensure_future(c.run(address, stop)) for c in clients]
            await _all_at(clients, "1", (_LDS, _RDS, _CDS, _EDS), 120)
            initial = time.perf_counter() - start
            pushes, cpu = [], []
            for edit in range(1, edits + 1):
                _, before = cpu_seconds([proc.pid])
                t0 = time.perf_counter()
                _config(directory, edit)
                await _all_at(clients, str(edit + 1), (_RDS, _EDS), 60)
                pushes.append(time.perf_counter() - t0)
                _, after = cpu_seconds([proc.pid])
                cpu.append(after - before)
            rss, peak = _rss_mb(proc.pid)
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "initial": initial,
        "push_p50": percentile(pushes, 50),
        "push_max": max(pushes),
        "cpu_p50": percentile(cpu, 50),
        "rss": rss,
        "peak": peak,
        "edits": edits,
    }


def run(quick: bool) -> list[Row]:
    """Rows: initial sync, push time to all-ACKed, control-plane CPU per push, memory."""
    m = asyncio.run(_measure(quick))
    scale = f"{SERVICES} services, {CLIENTS} clients"
    rows = []
    target, ok = check(m["push_p50"], "<=", 3.0, " s")
    rows.append(
        row(
            "push to all-ACKed (p50)",
            m["push_p50"],
            "s",
            target=target,
            passed=ok,
            note=f"{scale}; {m['edits']} edits; includes {_DEBOUNCE} s debounce",
        )
    )
    rows.append(row("push to all-ACKed (max)", m["push_max"], "s"))
    target, ok = check(m["initial"], "<=", 10.0, " s")
    rows.append(row("initial sync to all-ACKed", m["initial"], "s", target=target, passed=ok))
    target, ok = check(m["cpu_p50"], "<=", 2.0, " s")
    rows.append(
        row("control plane CPU per push (p50)", m["cpu_p50"], "s", target=target, passed=ok)
    )
    target, ok = check(m["peak"], "<=", 500.0, " MB")
    rows.append(row("control plane peak RSS", m["peak"], "MB", target=target, passed=ok))
    rows.append(row("control plane RSS after pushes", m["rss"], "MB"))
    return rows


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(f"{r['name']:<36} {r['value']:>10.3f} {r['unit']:<3} {r.get('target') or ''}")
