"""Every command and code block of README.md runs as written on a fresh clone.

The blocks are extracted from the README itself; each one is run, or its exact
equivalent is (named per block below). Ports the README fixes (15010, 15000, 8080 and
examples/bookinfo's pod ports) are swapped for free ones so that runs never collide; the
``meshlib`` command is ``python -m meshlib`` of this interpreter.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshlib.demo import DEFAULT_PORTS, write_platform
from meshlib.demo._bookinfo import free_ports

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = [
    (m.group(1), m.group(2))
    for m in re.finditer(r"^```(\w*)\n(.*?)^```", README, re.MULTILINE | re.DOTALL)
]


def commands(block: str) -> list[str]:
    """The block's command lines: continuations joined, comments dropped."""
    joined = block.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        line = re.sub(r"\s+", " ", re.sub(r"\s+#.*$", "", line)).strip()
        if line:
            out.append(line)
    return out


def shell_blocks() -> list[list[str]]:
    return [commands(text) for lang, text in BLOCKS if lang == ""]


def python_blocks() -> list[str]:
    return [text for lang, text in BLOCKS if lang == "python"]


def test_every_block_is_covered_here() -> None:
    shells = shell_blocks()
    assert shells == [
        ["make demo", "make test"],
        ['pip install "meshlib-proxyless[demo]"'],
        ["make demo ARGS=--serve"],
        [
            "meshlib control-plane --config examples/bookinfo/ --port 15010 --ca-dir ca/",
            "meshlib demo --serve --xds 127.0.0.1:15010 --ca-dir ca/ --config examples/bookinfo/",
            "meshlib bootstrap --xds 127.0.0.1:15010 --pod sleep --namespace default"
            " --cert-dir certs/ --ca-dir ca/ > bootstrap.json",
            "meshlib status --admin http://127.0.0.1:15000",
        ],
    ], "a README block changed: run it in this test"
    assert len(python_blocks()) == 2


def test_make_targets_run_what_the_readme_says() -> None:
    # `make demo` is the tour (tests/demo/test_tour.py runs it), `make test` this suite.
    demo = subprocess.run(["make", "-n", "demo"], cwd=ROOT, capture_output=True, text=True)
    assert "-m meshlib.demo" in demo.stdout, demo.stdout
    serve = subprocess.run(
        ["make", "-n", "demo", "ARGS=--serve"], cwd=ROOT, capture_output=True, text=True
    )
    assert "-m meshlib.demo --serve" in serve.stdout  # tests/demo/test_serve.py runs it
    test = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True)
    assert "-m pytest" in test.stdout


def test_pip_install_names_this_distribution_and_its_extra() -> None:
    # Installing the built wheel into a fresh venv is tests/test_packaging.py.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    name, extra = re.fullmatch(r'pip install "([\w-]+)\[(\w+)\]"', shell_blocks()[1][0]).groups()
    assert name == project["name"] and extra in project["optional-dependencies"]


class Background:
    """A long-running README command, stopped at the end."""

    def __init__(self, line: str, cwd: Path, ready: str) -> None:
        self.proc = subprocess.Popen(
            _shell(line), shell=True, cwd=cwd, text=True, executable="/bin/bash",
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.output: list[str] = []
        assert self.proc.stdout is not None
        for out in self.proc.stdout:
            self.output.append(out)
            if ready in out:
                return
        raise AssertionError(f"{line!r} ended: {''.join(self.output)}")

    def stop(self) -> str:
        self.proc.terminate()
        try:
            rest, _ = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rest, _ = self.proc.communicate()
        return "".join(self.output) + (rest or "")


def _shell(line: str) -> str:
    return re.sub(r"^meshlib ", f"{sys.executable} -m meshlib ", line)


@pytest.fixture
def clone(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A working copy with examples/bookinfo on free ports, and the port substitutions."""
    pods = dict(zip(DEFAULT_PORTS, free_ports(len(DEFAULT_PORTS)), strict=True))
    xds, admin, ingress = free_ports(3)
    shutil.copytree(ROOT / "examples" / "bookinfo", tmp_path / "examples" / "bookinfo")
    write_platform(tmp_path / "examples" / "bookinfo", pods)
    yield tmp_path, {"15010": str(xds), "15000": str(admin), "8080": str(ingress)}


@pytest.mark.timeout(120)
def test_the_control_plane_demo_bootstrap_and_snippets_run_as_written(
    clone: tuple[Path, dict[str, str]],
) -> None:
    cwd, ports = clone

    def subst(line: str) -> str:
        for old, new in ports.items():
            line = re.sub(rf"\b{old}\b", new, line)
        return line

    control_plane, demo, bootstrap, status = (subst(c) for c in shell_blocks()[3])
    demo += f" --admin-port {ports['15000']} --ingress-port {ports['8080']}"
    cp = Background(control_plane, cwd, "listening on")
    bookinfo = None
    try:
        bookinfo = Background(demo, cwd, "Ctrl-C stops it")
        run = subprocess.run(_shell(bootstrap), shell=True, cwd=cwd, capture_output=True,
                             text=True, executable="/bin/bash")
        assert run.returncode == 0, run.stderr
        assert (cwd / "bootstrap.json").stat().st_size > 0
        use_it, inbound = python_blocks()
        for code in (use_it, inbound):
            done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True,
                                  text=True, timeout=60)
            assert done.returncode == 0, done.stderr
        first = subprocess.run([sys.executable, "-c", use_it], cwd=cwd, capture_output=True,
                               text=True, timeout=60)
        assert first.stdout.strip() == "200 reviews-v1"  # as the README says
        shown = subprocess.run(_shell(status), shell=True, cwd=cwd, capture_output=True,
                               text=True, executable="/bin/bash")
        assert shown.returncode == 0, shown.stderr
        assert "xDS: SYNCED" in shown.stdout and "productpage-v1" in shown.stdout
    finally:
        if bookinfo is not None:
            bookinfo.stop()
        log = cp.stop()
    assert "error" not in log.lower(), log
