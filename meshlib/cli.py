"""The ``meshlib`` command line.

Each subcommand is a function registered with :func:`command`; it receives its own
``argparse`` sub-parser to fill and returns the handler that runs it::

    meshlib control-plane --config examples/bookinfo --port 15010
    meshlib bootstrap --xds 127.0.0.1:15010 --pod web-0 --cert-dir certs --ca-dir ca > b.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from . import _cli_args as checked
from ._cli_registry import COMMANDS as _COMMANDS
from ._cli_registry import Handler, command
from .controlplane._workload import ISTIO_CERT_DIR, build_bootstrap

__all__ = ["main"]


@command("control-plane", "run the embedded xDS control plane until SIGINT/SIGTERM")
def _control_plane(parser: argparse.ArgumentParser) -> Handler:
    parser.add_argument("--config", type=checked.existing_path, help="YAML/JSON file or directory")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument(
        "--port", type=checked.port, default=15010, help="port to bind (0-65535); 0 picks one"
    )
    parser.add_argument(
        "--no-watch",
        dest="watch",
        action="store_false",
        help="do not watch --config for changes (by default edits are pushed live)",
    )
    parser.add_argument(
        "--debounce",
        type=checked.number(0, 3600, unit="s"),
        default=0.2,
        help="seconds of quiet after an edit before it is pushed (default %(default)s)",
    )
    parser.add_argument(
        "--debug-port", type=int, help="serve /debug/syncz on 127.0.0.1 here (proxy-status)"
    )
    _kubernetes_and_ca_flags(parser)

    def run(args: argparse.Namespace) -> int:
        from meshlib.controlplane import ControlPlane

        from ._cli_ca import token_authenticators

        source, ca = _source_and_ca(parser, args)

        done = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            done.set()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            with ControlPlane(
                source,
                host=args.host,
                port=args.port,
                ca=ca,
                token_authenticators=token_authenticators(source, ca),
                watch=args.watch,
                debounce=args.debounce,
            ) as cp:
                print(f"meshlib control plane listening on {cp.address}", flush=True)
                debug = None if args.debug_port is None else cp.debug_server(port=args.debug_port)
                if debug is not None:
                    print(f"meshlib control plane debug on {debug.url}/debug/syncz", flush=True)
                while not done.wait(0.5):
                    pass
                if debug is not None:
                    debug.stop()
            print("meshlib control plane stopped", flush=True)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

    return run


def _kubernetes_and_ca_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Kubernetes and certificates")
    group.add_argument(
        "--kubernetes", action="store_true", help="watch a live API server instead of --config"
    )
    group.add_argument(
        "--kubeconfig",
        type=checked.existing_file,
        help="kubeconfig path (default: in-cluster or ~/.kube/config)",
    )
    group.add_argument("--kube-context", help="kubeconfig context to use")
    group.add_argument(
        "--watch-namespace",
        action="append",
        dest="namespaces",
        metavar="NS",
        help="only this namespace (repeatable; default all)",
    )
    group.add_argument("--ca-dir", help="load the mesh CA from here (root-cert.pem, root-key.pem)")
    _init_ca_flag(group)


def _init_ca_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--init-ca",
        action="store_true",
        help="create the CA in --ca-dir if it holds none (without it, a missing CA is an error)",
    )


def _source_and_ca(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[Any, Any]:
    """The control plane's source (files or Kubernetes) and CA, from the flags."""
    from meshlib.controlplane import KubernetesSource

    if bool(args.config) == bool(args.kubernetes):
        parser.error("give one of --config DIR or --kubernetes")
    source: Any = args.config
    if args.kubernetes:
        source = KubernetesSource(
            kubeconfig=args.kubeconfig, context=args.kube_context, namespaces=args.namespaces
        )
    if args.init_ca and not args.ca_dir:
        parser.error("--init-ca: needs --ca-dir")
    ca = _certificate_authority(parser, args.ca_dir, init=args.init_ca) if args.ca_dir else None
    if ca is not None:
        print(f"meshlib certificate authority in {ca.directory}", flush=True)
    return source, ca


def _certificate_authority(
    parser: argparse.ArgumentParser,
    directory: str,
    trust_domain: str = "cluster.local",
    *,
    init: bool = False,
) -> Any:
    """The CA in ``directory``; one is created there only with ``--init-ca``."""
    from meshlib.controlplane import CertificateAuthority, CertificateError

    if not init:
        if not os.path.isdir(directory):
            what = "is not a directory" if os.path.exists(directory) else "no such directory"
            parser.error(f"--ca-dir: {directory}: {what} (pass --init-ca to create a CA there)")
        files = [f for f in _CA_FILES if not os.path.isfile(os.path.join(directory, f))]
        if len(files) == len(_CA_FILES):
            parser.error(
                f"--ca-dir: {directory} holds no CA ({', '.join(_CA_FILES)}); "
                "pass --init-ca to create one"
            )
    try:
        return CertificateAuthority(directory, trust_domain=trust_domain)
    except CertificateError as err:
        parser.error(f"--ca-dir: {err}")


_CA_FILES = ("root-cert.pem", "root-key.pem")


@command("bootstrap", "print a workload's gRPC xDS bootstrap JSON (as istio-agent writes it)")
def _bootstrap(parser: argparse.ArgumentParser) -> Handler:
    parser.add_argument(
        "--xds",
        required=True,
        metavar="ADDR",
        type=checked.host_port,
        help="control plane host:port",
    )
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--node-id", help="the node id, e.g. sidecar~IP~POD.NS~NS.svc.cluster.local")
    who.add_argument("--pod", help="pod name: the node id is istio's sidecar~IP~POD.NS~...")
    parser.add_argument(
        "--namespace", help="the workload's namespace (default: from the node id or 'default')"
    )
    parser.add_argument(
        "--ip",
        type=checked.ip_address,
        help="the workload's IP (default: from the node id or 127.0.0.1)",
    )
    parser.add_argument("--service-account", default="default", help="for the SPIFFE identity")
    parser.add_argument(
        "--label", action="append", default=[], metavar="KEY=VALUE", help="a pod label (repeatable)"
    )
    parser.add_argument(
        "--cert-dir",
        default=ISTIO_CERT_DIR,
        help="where the file_watcher provider reads certificates (default %(default)s)",
    )
    parser.add_argument(
        "--ca-dir", help="issue the workload certificate from the CA here into --cert-dir"
    )
    _init_ca_flag(parser)
    parser.add_argument(
        "--token-file", help="get the certificate by a CSR to --xds with this bootstrap token"
    )
    parser.add_argument(
        "--cert-ttl",
        type=checked.number(0, checked.MAX_CERT_TTL, low_inclusive=False, unit="s"),
        default=86400.0,
        help="certificate lifetime in seconds, at most 90 days (default %(default)s)",
    )
    parser.add_argument(
        "--trust-domain", default="cluster.local", help="SPIFFE trust domain (default %(default)s)"
    )

    def run(args: argparse.Namespace) -> int:
        labels = {}
        for item in args.label:
            key, sep, value = item.partition("=")
            if not sep or not key:
                parser.error(f"--label: {item!r} is not KEY=VALUE")
            labels[key] = value
        bootstrap = build_bootstrap(
            args.xds,
            node_id=args.node_id,
            pod=args.pod,
            namespace=args.namespace,
            ip=args.ip,
            service_account=args.service_account,
            labels=labels,
            cert_dir=args.cert_dir,
        )
        if args.init_ca and not args.ca_dir:
            parser.error("--init-ca: needs --ca-dir")
        if args.ca_dir:
            from meshlib.controlplane import spiffe_id

            ca = _certificate_authority(parser, args.ca_dir, args.trust_domain, init=args.init_ca)
            namespace = bootstrap["node"]["metadata"]["NAMESPACE"]
            identity = spiffe_id(namespace, args.service_account, args.trust_domain)
            files = ca.write_workload_files(identity, args.cert_dir, ttl=args.cert_ttl)
            print(f"meshlib: wrote {identity} certificate to {files.cert_chain}", file=sys.stderr)
        elif args.token_file:
            from ._cli_ca import certificate_by_csr

            certificate_by_csr(parser, args, bootstrap)
        print(json.dumps(bootstrap, indent=2))
        return 0

    return run


from . import _cli_ca, _cli_status  # noqa: E402, F401 (registers token, status, config-dump)


@command("demo", "BookInfo: Istio's tour on loopback (--serve: leave it running)")
def _demo(parser: argparse.ArgumentParser) -> Handler:
    from .demo._cli import add_arguments, run

    add_arguments(parser)
    return run


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Handler]]:
    """The top-level parser and each subcommand's handler."""
    parser = argparse.ArgumentParser(prog="meshlib", description="A proxyless service mesh.")
    parser.add_argument(
        "--log-level",
        type=checked.log_level,
        default="WARNING",
        help="logging level (DEBUG, INFO, ...)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    handlers: dict[str, Handler] = {}
    for name, (help_text, setup) in _COMMANDS.items():
        handlers[name] = setup(subparsers.add_parser(name, help=help_text, description=help_text))
    return parser, handlers


from . import _cli_config  # noqa: E402, F401 (registers validate, analyze, apply, delete)


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
