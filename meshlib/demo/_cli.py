"""The demo's command line, shared by ``meshlib demo`` and ``python -m meshlib.demo``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["add_arguments", "main", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's flags, on ``parser``."""
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--serve", action="store_true",
                      help="leave BookInfo running and print its URLs (Ctrl-C stops it)")
    mode.add_argument("--fast", action="store_true",
                      help="the tour with delays and timeouts x 0.4 and fewer requests (CI)")
    mode.add_argument("--workload", metavar="NAME",
                      help="run one workload (productpage-v1, reviews-v2...) as a Kubernetes "
                      "pod: bootstrap from GRPC_XDS_BOOTSTRAP, serving 0.0.0.0:9080")
    parser.add_argument("--xds", metavar="ADDR",
                        help="with --serve: use this running control plane (e.g. "
                        "`meshlib control-plane --config examples/bookinfo/`) instead of one's own")
    parser.add_argument("--ca-dir", help="with --xds: that control plane's --ca-dir")
    parser.add_argument("--config", metavar="DIR",
                        help="with --xds: listen where that control plane's --config puts "
                        "BookInfo's pods (default: examples/bookinfo's ports)")
    parser.add_argument("--ingress-port", type=int, default=8080,
                        help="with --serve: the browser's port (default %(default)s)")
    parser.add_argument("--admin-port", type=int, default=15000,
                        help="with --serve: productpage's admin port (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    """Run the tour or, with ``--serve``, BookInfo until interrupted."""
    try:
        from ._serve import serve
        from ._tour import run_tour
    except ImportError as err:  # the demo's own dependencies are an extra
        print(f"meshlib demo needs {err.name}: pip install 'meshlib-proxyless[demo]'",
              file=sys.stderr)
        return 2
    if (args.xds or args.ca_dir or args.config) and not args.serve:
        print("meshlib demo: --xds, --ca-dir and --config go with --serve", file=sys.stderr)
        return 2
    if args.config and not args.xds:
        print("meshlib demo: --config goes with --xds", file=sys.stderr)
        return 2
    if bool(args.xds) != bool(args.ca_dir):
        print("meshlib demo: give --xds and --ca-dir together", file=sys.stderr)
        return 2
    if args.workload:
        from ._serve import run_pod

        try:
            return run_pod(args.workload, admin_port=args.admin_port)
        except ValueError as err:
            print(f"meshlib demo: {err}", file=sys.stderr)
            return 2
    if args.serve:
        from pathlib import Path

        from ._platform import read_ports

        try:
            ports = read_ports(Path(args.config)) if args.config else None
        except (OSError, ValueError) as err:
            print(f"meshlib demo: --config: {err}", file=sys.stderr)
            return 2
        return serve(xds=args.xds, ca_dir=args.ca_dir, ingress_port=args.ingress_port,
                     admin_port=args.admin_port, ports=ports)
    return run_tour(fast=args.fast)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m meshlib.demo``."""
    parser = argparse.ArgumentParser(prog="meshlib demo", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))
