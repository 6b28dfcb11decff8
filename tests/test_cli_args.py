"""The command line refuses out-of-range numbers, paths that do not exist and a missing CA,
with argparse's usage error naming the flag (exit status 2), before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshlib.cli import main


def usage_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


BOOT = ["bootstrap", "--xds", "127.0.0.1:15010", "--pod", "p"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "99999"], "argument --port: 99999 is not a port (0-65535)"),
        (["--port", "65536"], "argument --port: 65536 is not a port (0-65535)"),
        (["--port", "-1"], "argument --port: -1 is not a port (0-65535)"),
        (["--port", "http"], "argument --port: 'http' is not a port number"),
        (["--debounce", "-0.5"], "argument --debounce: -0.5 is out of range [0, 3600] s"),
        (["--debounce", "nan"], "argument --debounce: nan is out of range"),
        (["--debounce", "soon"], "argument --debounce: 'soon' is not a number"),
    ],
)
def test_control_plane_numbers_are_range_checked(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], message: str
) -> None:
    assert message in usage_error(capsys, ["control-plane", "--config", str(tmp_path), *args])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cert-ttl", "0"], "argument --cert-ttl: 0 is out of range (0, 7.776e+06] s"),
        (["--cert-ttl", "1e12"], "argument --cert-ttl: 1e12 is out of range"),
        (["--cert-ttl", "inf"], "argument --cert-ttl: inf is out of range"),
        (["--ip", "999.1.1.1"], "argument --ip: '999.1.1.1' is not an IP address"),
    ],
)
def test_bootstrap_numbers_are_range_checked(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert message in usage_error(capsys, [*BOOT, *args])


@pytest.mark.parametrize(
    ("xds", "message"),
    [
        ("nohost", "argument --xds: 'nohost' is not host:port"),
        ("cp:99999", "argument --xds: 'cp:99999': 99999 is not a port (0-65535)"),
        (":15010", "argument --xds: ':15010' is not host:port"),
    ],
)
def test_xds_address_is_checked(capsys: pytest.CaptureFixture[str], xds: str, message: str) -> None:
    assert message in usage_error(capsys, ["bootstrap", "--xds", xds, "--pod", "p"])


def test_log_level_is_checked(capsys: pytest.CaptureFixture[str]) -> None:
    err = usage_error(capsys, ["--log-level", "LOUD", *BOOT])
    assert "argument --log-level: 'LOUD' is not a level" in err


def test_paths_that_must_exist(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "nosuch"
    err = usage_error(capsys, ["control-plane", "--config", str(missing)])
    assert f"argument --config: {missing}: no such file or directory" in err
    err = usage_error(capsys, ["control-plane", "--kubernetes", "--kubeconfig", str(missing)])
    assert f"argument --kubeconfig: {missing}: no such file" in err


def test_a_missing_ca_dir_is_an_error_unless_init_ca(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ca = tmp_path / "nosuchca"
    certs = tmp_path / "certs"
    boot = [*BOOT, "--cert-dir", str(certs)]
    err = usage_error(capsys, [*boot, "--ca-dir", str(ca)])
    assert f"--ca-dir: {ca}: no such directory (pass --init-ca to create a CA there)" in err
    err = usage_error(capsys, ["control-plane", "--config", str(tmp_path), "--ca-dir", str(ca)])
    assert f"--ca-dir: {ca}: no such directory" in err
    assert not ca.exists() and not certs.exists()  # nothing created
    empty = tmp_path / "empty"
    empty.mkdir()
    err = usage_error(capsys, [*boot, "--ca-dir", str(empty)])
    assert f"--ca-dir: {empty} holds no CA (root-cert.pem, root-key.pem); pass --init-ca" in err
    assert "--init-ca: needs --ca-dir" in usage_error(capsys, [*boot, "--init-ca"])
    # --init-ca creates it; later runs load it without the flag.
    assert main([*boot, "--ca-dir", str(ca), "--init-ca"]) == 0
    root = (ca / "root-cert.pem").read_bytes()
    assert main([*boot, "--ca-dir", str(ca)]) == 0
    assert (ca / "root-cert.pem").read_bytes() == root
    assert (certs / "root-cert.pem").read_bytes() == root
