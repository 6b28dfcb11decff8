"""The ``meshlib`` command line.

Each subcommand is a function registered with :func:`command`; it receives its own
``argparse`` sub-parser to fill and returns the handler that runs it::

    meshlib control-plane --config examples/demo/config --port 15010
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType

__all__ = ["main"]

Handler = Callable[[argparse.Namespace], int]
Setup = Callable[[argparse.ArgumentParser], Handler]
_COMMANDS: dict[str, tuple[str, Setup]] = {}


def command(name: str, help: str) -> Callable[[Setup], Setup]:
    """Register a subcommand: the decorated function configures its parser."""

    def register(setup: Setup) -> Setup:
        _COMMANDS[name] = (help, setup)
        return setup

    return register


@command("control-plane", "run the embedded xDS control plane until SIGINT/SIGTERM")
def _control_plane(parser: argparse.ArgumentParser) -> Handler:
    parser.add_argument("--config", required=True, help="YAML/JSON file or directory")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=15010, help="port to bind; 0 picks one")

    def run(args: argparse.Namespace) -> int:
        from meshlib.controlplane import ControlPlane

        done = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            done.set()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            with ControlPlane(args.config, host=args.host, port=args.port) as cp:
                print(f"meshlib control plane listening on {cp.address}", flush=True)
                while not done.wait(0.5):
                    pass
            print("meshlib control plane stopped", flush=True)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

    return run


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Handler]]:
    """The top-level parser and each subcommand's handler."""
    parser = argparse.ArgumentParser(prog="meshlib", description="A proxyless service mesh.")
    parser.add_argument("--log-level", default="WARNING", help="logging level (DEBUG, INFO, ...)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    handlers: dict[str, Handler] = {}
    for name, (help_text, setup) in _COMMANDS.items():
        handlers[name] = setup(subparsers.add_parser(name, help=help_text, description=help_text))
    return parser, handlers


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``meshlib`` command; returns the exit status."""
    from meshlib.controlplane import ConfigError

    parser, handlers = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return handlers[args.command](args)
    except ConfigError as err:
        print(f"meshlib: configuration error:\n{err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"meshlib: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
