"""``meshlib validate``, ``analyze``, ``apply`` and ``delete``: Istio configuration as
``istioctl validate``/``analyze`` and ``kubectl apply``/``delete`` handle it::

    meshlib validate -f samples/bookinfo/networking/
    meshlib analyze --config examples/bookinfo/
    meshlib apply -f virtual-service-reviews-v3.yaml --config examples/bookinfo/
    meshlib delete -f virtual-service-reviews-v3.yaml --config examples/bookinfo/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ._cli_registry import Handler, command

if TYPE_CHECKING:
    from .controlplane._apply import Change

__all__: list[str] = []


def _files_flag(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument(
        "-f",
        "--filename",
        action="append",
        default=[],
        required=required,
        metavar="FILE|DIR",
        help="a YAML/JSON file or a folder (read recursively); repeatable",
    )


def _config_flag(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument(
        "--config",
        required=required,
        metavar="DIR",
        help="the config folder the control plane serves (meshlib control-plane --config DIR)",
    )


@command("validate", "check Istio/Kubernetes files offline, as istioctl validate (every error)")
def _validate(parser: argparse.ArgumentParser) -> Handler:
    _files_flag(parser)

    def run(args: argparse.Namespace) -> int:
        from meshlib.controlplane import ConfigError, FileSource
        from meshlib.controlplane.sources._files import assemble
        from meshlib.controlplane.translate._translate import unserved

        problems: list[str] = []
        count = 0
        for path in args.filename:
            try:
                result = FileSource(path).load_lenient()
            except ConfigError as err:
                problems += err.problems
                continue
            # Valid objects meshlib cannot serve (CUSTOM authorization...) count as errors.
            problems += [*result.problems, *unserved(assemble(result.objects))]
            count += len(result.objects)
        for line in problems:
            print(f"Error: {line}", file=sys.stderr)
        if problems:
            print(f"{len(problems)} error{'' if len(problems) == 1 else 's'}", file=sys.stderr)
            return 1
        print(f"{count} objects are valid")
        return 0

    return run


@command("analyze", "report references that resolve to nothing, as istioctl analyze")
def _analyze(parser: argparse.ArgumentParser) -> Handler:
    _files_flag(parser, required=False)
    _config_flag(parser, required=False)

    def run(args: argparse.Namespace) -> int:
        from meshlib.controlplane import FileSource
        from meshlib.controlplane._analyze import analyze
        from meshlib.controlplane.sources._files import assemble

        paths = [*args.filename, *([args.config] if args.config else [])]
        if not paths:
            parser.error("give -f FILE|DIR or --config DIR")
        objects: dict[str, object] = {}
        problems: list[str] = []
        for path in paths:
            result = FileSource(path).load_lenient()
            objects.update(result.objects)
            problems += result.problems
        findings = problems + analyze(assemble(objects))
        for line in findings:
            print(f"Warning: {line}")
        if not findings:
            print("No validation issues found.")
        return 1 if findings else 0

    return run


def _report(config: Path, changes: list[Change], timeout: float) -> int:
    from meshlib.controlplane._apply import wait_for_reload

    status = 0
    for change in changes:
        if change.action == "not found":
            print(f"Error from server (NotFound): {change.name} not found", file=sys.stderr)
            status = 1
        else:
            print(f"{change.name} {change.action}")
    if not any(c.file is not None for c in changes):
        return status
    waited = wait_for_reload(config, changes, timeout)
    if waited is None:
        print(f"meshlib: no control plane is serving {config}; the change is stored there")
        return status
    reloaded, problems = waited
    if not reloaded:
        print(
            f"meshlib: the control plane did not reload {config} in {timeout:g}s", file=sys.stderr
        )
        return 1
    for line in problems:
        print(f"Error: {line}", file=sys.stderr)
    return 1 if problems else status


def _change_command(parser: argparse.ArgumentParser, verb: str) -> Handler:
    _files_flag(parser)
    _config_flag(parser)
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds to wait for the control plane to serve the change (default %(default)s)",
    )

    def run(args: argparse.Namespace) -> int:
        from meshlib.controlplane._apply import apply_objects, delete_objects

        config = Path(args.config)
        if not config.is_dir():
            parser.error(f"--config {config}: not a directory")
        do = apply_objects if verb == "apply" else delete_objects
        return _report(config, do(config, args.filename), args.timeout)

    return run


@command("apply", "apply objects to a control plane's config folder, as kubectl apply")
def _apply(parser: argparse.ArgumentParser) -> Handler:
    return _change_command(parser, "apply")


@command("delete", "delete objects from a control plane's config folder, as kubectl delete")
def _delete(parser: argparse.ArgumentParser) -> Handler:
    return _change_command(parser, "delete")
