"""gRPC unary QPS, p99 and client CPU: plain grpcio vs meshlib's channel vs grpcio's own
xDS channel vs grpcio through an Envoy sidecar.

Same backend (a grpc.server in its own process), same run, interleaved rounds; the
control plane runs in its own process too, and so does the sidecar Envoy (static
bootstrap, HTTP/2 both ways; its CPU is reported apart). Sequential (sync, one caller)
and 50 concurrent calls on grpc.aio. ``python -m benchmarks.grpc_bench [--quick]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from ._harness import (
    Measurement,
    Row,
    Variant,
    check,
    cpu_seconds,
    measure_interleaved,
    percentile,
    row,
    start_control_plane,
    start_envoy,
    wait_until,
)
from .http_bench import envoy_bootstrap

__all__ = ["run"]

TARGET = "echo.default.svc.cluster.local:7070"
METHOD = "/test.Echo/Echo"
SIDECAR = "grpcio + Envoy sidecar"
_ENVOY_CONCURRENCY = 2  # istio-proxy's default worker count
_H2_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
SERVER = textwrap.dedent(
    """
    import sys, time
    from concurrent import futures
    import grpc
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    handler = grpc.method_handlers_generic_handler(
        "test.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(lambda r, c: b"ok")})
    server.add_generic_rpc_handlers((handler,))
    print(server.add_insecure_port("127.0.0.1:0"), flush=True)
    server.start()
    sys.stdin.read()
    """
)


def _config(directory: Path, port: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "echo.yaml").write_text(
        textwrap.dedent(
            f"""\
            apiVersion: v1
            kind: Service
            metadata: {{name: echo, namespace: default}}
            spec:
              ports: [{{name: grpc, port: 7070, targetPort: 7070, appProtocol: grpc}}]
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata:
              name: echo-0
              namespace: default
              labels: {{kubernetes.io/service-name: echo}}
            addressType: IPv4
            endpoints:
            - addresses: [127.0.0.1]
              conditions: {{ready: true}}
            ports: [{{name: grpc, port: {port}, protocol: TCP}}]
            """
        )
    )


def _start_server(stack: contextlib.ExitStack) -> int:
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    stack.callback(lambda: (proc.kill(), proc.wait()))
    assert proc.stdout is not None
    return int(proc.stdout.readline())


def _bootstrap(address: str) -> dict[str, Any]:
    return {
        "xds_servers": [
            {
                "server_uri": address,
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"],
            }
        ],
        "node": {
            "id": "sidecar~127.0.0.1~bench.default~default.svc.cluster.local",
            "metadata": {"GENERATOR": "grpc", "NAMESPACE": "default"},
        },
    }


def _sidecar_bootstrap(backend_port: int) -> dict[str, Any]:
    """A static Envoy in front of the backend: gRPC (HTTP/2) in, HTTP/2 upstream."""
    config = envoy_bootstrap(backend_port)
    for cluster in config["static_resources"]["clusters"]:
        cluster["typed_extension_protocol_options"] = {
            _H2_OPTIONS: {
                "@type": f"type.googleapis.com/{_H2_OPTIONS}",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    return config


async def _aio_round(
    call: Callable[[], Awaitable[Any]], seconds: float, workers: int, pids: tuple[int, ...]
) -> Measurement:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    clock = time.perf_counter

    async def worker() -> None:
        while (now := clock()) < deadline:
            await call()
            latencies.append(clock() - now)

    app0, proxy0 = cpu_seconds(pids)
    start = clock()
    await asyncio.gather(*(worker() for _ in range(workers)))
    elapsed = clock() - start
    app1, proxy1 = cpu_seconds(pids)
    return Measurement(len(latencies), elapsed, app1 - app0, proxy1 - proxy0, latencies)


async def _aio_bench(
    variants: dict[str, Callable[[], Awaitable[Any]]],
    rounds: int,
    seconds: float,
    workers: int,
    pids: dict[str, tuple[int, ...]],
) -> dict[str, Measurement]:
    for name, call in variants.items():
        await _aio_round(call, seconds / 2, workers, pids.get(name, ()))  # warm-up
    totals = {name: Measurement() for name in variants}
    names = list(variants)
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            m = await _aio_round(variants[name], seconds, workers, pids.get(name, ()))
            t = totals[name]
            t.requests += m.requests
            t.seconds += m.seconds
            t.app_cpu += m.app_cpu
            t.proxy_cpu += m.proxy_cpu
            t.latencies += m.latencies
    return totals


def _rows(group: str, results: dict[str, Measurement], note: str) -> list[Row]:
    plain = results["plain grpcio"]
    out: list[Row] = []
    for name, m in results.items():
        out.append(
            row(
                f"{group}: {name} QPS",
                round(m.throughput, 1),
                "req/s",
                group=group,
                variant=name,
                metric="QPS",
                note=note,
            )
        )
        out.append(
            row(
                f"{group}: {name} p99",
                round(percentile(m.latencies, 99) * 1000, 3),
                "ms",
                group=group,
                variant=name,
                metric="p99 ms",
            )
        )
        for metric, which in (("client CPU / 1k req", "total"), ("of which Envoy", "proxy")):
            out.append(
                row(
                    f"{group}: {name} {metric}",
                    round(m.cpu_ms_per_1k(which), 1),
                    "ms",
                    group=group,
                    variant=name,
                    metric=metric,
                )
            )
    ratio = results["meshlib"].throughput / plain.throughput if plain.throughput else None
    target, passed = check(ratio, ">=", 0.9, "x")
    out.append(
        row(
            f"{group}: meshlib QPS vs plain grpcio",
            ratio and round(ratio, 3),
            "x",
            target=target,
            passed=passed,
            group=group,
            variant="meshlib",
            metric="vs plain",
        )
    )
    for name in ("grpcio xDS", SIDECAR):
        other = results.get(name)
        if other is not None and plain.throughput:
            out.append(
                row(
                    f"{group}: {name} QPS vs plain grpcio",
                    round(other.throughput / plain.throughput, 3),
                    "x",
                    group=group,
                    variant=name,
                    metric="vs plain",
                )
            )
    return out


class _StubSubchannel:
    """A subchannel whose unary calls answer ``b"ok"`` at once, without grpcio."""

    def unary_unary(self, *args: Any, **kwargs: Any) -> Callable[..., bytes]:
        return lambda *a, **k: b"ok"

    def close(self) -> None:
        pass


def _answers(call: Callable[[], Any]) -> bool:
    return bool(call() == b"ok")


def _cpu_per_call(fn: Callable[[], Any], n: int, rounds: int) -> float:
    """Seconds of this thread's CPU per call: the best of ``rounds`` rounds."""
    best = float("inf")
    for _ in range(rounds):
        start = time.thread_time()
        for _ in range(n):
            fn()
        best = min(best, (time.thread_time() - start) / n)
    return best


def _work_rows(mesh: Any, plain: Any, quick: bool) -> list[Row]:
    """meshlib's own work per sync unary call (route, attempt loop, endpoint bookkeeping,
    telemetry, the channel's glue) with the grpcio call stubbed out, as a share of the
    CPU one plain grpcio call takes in this run: the part of the gap that is meshlib's
    Python, measured without the network's noise."""
    from meshlib.grpc import MeshChannel

    class Stubbed(MeshChannel):
        def _subchannel(self, address: str, authority: str) -> Any:
            return _StubSubchannel()

    n, rounds = (500, 5) if quick else (2000, 9)
    engine = mesh._engine
    with (
        Stubbed(engine, f"xds:///{TARGET}", telemetry=mesh.telemetry) as full,
        Stubbed(engine, f"xds:///{TARGET}") as bare,
    ):
        fns = {
            "full": full.unary_unary(METHOD),
            "bare": bare.unary_unary(METHOD),
            "plain": plain.unary_unary(METHOD),
        }
        calls: dict[str, Callable[[], Any]] = {
            k: functools.partial(fn, b"x", timeout=5) for k, fn in fns.items()
        }
        for call in calls.values():
            wait_until(functools.partial(_answers, call), "stubbed first call")
        cpu = {k: _cpu_per_call(call, n, rounds) for k, call in calls.items()}
    group = "gRPC unary, meshlib work per call"
    return [
        row(
            "meshlib channel work per sync call (grpcio stubbed)",
            round(cpu["full"] * 1e6, 2),
            "us",
            group=group,
            note="client CPU, best of rounds; with telemetry",
        ),
        row(
            "of which without telemetry",
            round(cpu["bare"] * 1e6, 2),
            "us",
            group=group,
            note="route, fault, attempt loop, endpoint bookkeeping, channel glue",
        ),
        row(
            "meshlib work / plain grpcio call CPU",
            round(100 * cpu["full"] / cpu["plain"], 1),
            "%",
            group=group,
            note=f"a plain sync call: {cpu['plain'] * 1e6:.0f} us of client CPU",
        ),
    ]


def run(quick: bool) -> list[Row]:
    """Rows: QPS and p99 per client, and meshlib's QPS as a ratio of plain grpcio's."""
    from meshlib import Mesh

    rounds, seconds = (2, 0.6) if quick else (5, 2.0)
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        port = _start_server(stack)
        _config(work / "config", port)
        address = start_control_plane(stack, work / "config")
        bootstrap = _bootstrap(address)
        os.environ["GRPC_XDS_BOOTSTRAP_CONFIG"] = json.dumps(bootstrap)  # grpcio's own xDS
        mesh = stack.enter_context(Mesh(bootstrap=bootstrap))

        envoy = start_envoy(
            stack, "grpc-sidecar", _sidecar_bootstrap(port), work / "envoy", _ENVOY_CONCURRENCY
        )
        sidecar = f"127.0.0.1:{envoy.ports['proxy']}"
        pids = {SIDECAR: (envoy.pid,)}

        plain = stack.enter_context(grpc.insecure_channel(f"127.0.0.1:{port}"))
        meshed = stack.enter_context(mesh.grpc_channel(f"xds:///{TARGET}"))
        xds = stack.enter_context(grpc.insecure_channel(f"xds:///{TARGET}"))
        proxied = stack.enter_context(grpc.insecure_channel(sidecar))
        calls = {
            "plain grpcio": plain.unary_unary(METHOD),
            "meshlib": meshed.unary_unary(METHOD),
            "grpcio xDS": xds.unary_unary(METHOD),
            SIDECAR: proxied.unary_unary(METHOD),
        }
        for name, fn in calls.items():
            wait_until(lambda fn=fn: fn(b"x", timeout=5) == b"ok", f"{name} first call")
        seq = measure_interleaved(
            [
                Variant(n, lambda fn=fn: fn(b"x", timeout=5), pids.get(n, ()))
                for n, fn in calls.items()
            ],
            rounds=rounds,
            round_seconds=seconds,
            warmup_seconds=seconds / 2,
        )
        rows = _rows("gRPC unary, sequential (sync)", seq, "one caller, same backend process")
        rows += _work_rows(mesh, plain, quick)

        async def concurrent() -> dict[str, Measurement]:
            channels = {
                "plain grpcio": grpc.aio.insecure_channel(f"127.0.0.1:{port}"),
                "meshlib": mesh.grpc_aio_channel(f"xds:///{TARGET}"),
                "grpcio xDS": grpc.aio.insecure_channel(f"xds:///{TARGET}"),
                SIDECAR: grpc.aio.insecure_channel(sidecar),
            }
            fns = {n: c.unary_unary(METHOD) for n, c in channels.items()}
            variants = {n: (lambda fn=fn: fn(b"x", timeout=5)) for n, fn in fns.items()}
            try:
                return await _aio_bench(variants, rounds, seconds, 50, pids)
            finally:
                for c in channels.values():
                    await c.close()

        aio = asyncio.run(concurrent())
        rows += _rows("gRPC unary, 50 concurrent (aio)", aio, "50 tasks on one event loop")
        return rows


if __name__ == "__main__":
    for r in run("--quick" in sys.argv):
        print(json.dumps(r))
