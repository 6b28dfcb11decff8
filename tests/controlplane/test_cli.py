"""``meshlib control-plane``: runs until SIGTERM/SIGINT, prints its address, exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from meshlib.cli import build_parser, main
from meshlib.controlplane import CLUSTER_TYPE, ControlPlane

from .conftest import AdsClient, write


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "meshlib.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_control_plane_serves_until_signal(config_dir: Path, sig: signal.Signals) -> None:
    proc = _start("control-plane", "--config", str(config_dir), "--port", "0")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("meshlib control plane listening on 127.0.0.1:"), line
        address = line.rsplit(" ", 1)[1].strip()
        client = AdsClient(address, "cli-node")
        try:
            client.send(CLUSTER_TYPE)
            assert len(client.recv().resources) == 2
        finally:
            client.close()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert "stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bad_config_exits_2_with_message(tmp_path: Path) -> None:
    write(
        tmp_path / "bad.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 0}]}",
    )
    proc = _start("control-plane", "--config", str(tmp_path), "--port", "0")
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert "bad.yaml: Service default/a: spec.ports[0].port: must be an integer 1-65535" in err
    assert out == ""


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["control-plane"])
    assert info.value.code == 2
    assert "--config" in capsys.readouterr().err
    parser, handlers = build_parser()
    assert "control-plane" in handlers
    assert "control-plane" in parser.format_help()


def test_port_in_use_exits_1(config_dir: Path) -> None:
    with ControlPlane(config_dir) as running:
        proc = _start("control-plane", "--config", str(config_dir), "--port", str(running.port))
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 1
    assert f"meshlib: cannot listen on 127.0.0.1:{running.port}" in err


def test_control_plane_pushes_config_edits_live(config_dir: Path) -> None:
    proc = _start("control-plane", "--config", str(config_dir), "--port", "0", "--debounce", "0.05")
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().rsplit(" ", 1)[1].strip()
        client = AdsClient(address, "cli-watch")
        try:
            client.send(CLUSTER_TYPE)
            first = client.recv()
            assert len(first.resources) == 2
            client.ack(first)
            (config_dir / "ratings.yml").unlink()
            assert len(client.recv(timeout=10).resources) == 1
        finally:
            client.close()
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
