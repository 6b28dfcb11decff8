"""``meshlib token`` and the agent path of ``meshlib bootstrap``: certificates by CSR.

The embedded control plane signs a workload's CSR when the request carries a bootstrap
token it issued (or, with ``--kubernetes``, a service-account token TokenReview accepts)::

    meshlib token --ca-dir ca --namespace prod --service-account payments > token
    meshlib bootstrap --xds 127.0.0.1:15010 --pod web-0 --cert-dir certs --token-file token

The private key is generated in ``--cert-dir``'s process and never leaves it. With
``control-plane --kubernetes`` the tokens are the workloads' service-account tokens
(audience ``istio-ca``), checked with TokenReview.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._cli_registry import Handler, command

__all__ = ["certificate_by_csr", "token_authenticators"]


@command("token", "print a bootstrap token for a workload identity (the control plane's CA)")
def _token(parser: argparse.ArgumentParser) -> Handler:
    parser.add_argument("--ca-dir", required=True, help="the control plane's CA directory")
    parser.add_argument("--namespace", default="default", help="the workload's namespace")
    parser.add_argument("--service-account", default="default", help="its service account")
    parser.add_argument("--ttl", type=float, default=3600.0, help="seconds (default %(default)s)")
    parser.add_argument(
        "--trust-domain", default="cluster.local", help="SPIFFE trust domain (default %(default)s)"
    )

    def run(args: argparse.Namespace) -> int:
        from .controlplane.ca import BootstrapTokens, CertificateAuthority, CertificateError
        from .controlplane.ca import spiffe_id as make_id

        try:
            ca = CertificateAuthority(args.ca_dir, trust_domain=args.trust_domain)
            identity = make_id(args.namespace, args.service_account, args.trust_domain)
            print(BootstrapTokens(ca).issue(identity, args.ttl))
        except CertificateError as err:
            parser.error(str(err))
        return 0

    return run


def certificate_by_csr(
    parser: argparse.ArgumentParser, args: argparse.Namespace, bootstrap: dict[str, Any]
) -> None:
    """Write ``--cert-dir``'s files by a CSR to ``--xds``, authenticated by ``--token-file``."""
    from .controlplane.ca import read_token, spiffe_id
    from .security import AgentError, CertificateAgent

    namespace = bootstrap["node"]["metadata"]["NAMESPACE"]
    identity = spiffe_id(namespace, args.service_account, args.trust_domain)
    try:
        token = read_token(args.token_file)
        agent = CertificateAgent(args.xds, identity, args.cert_dir, token=token, ttl=args.cert_ttl)
        issued = agent.rotate_now()
    except (OSError, AgentError) as err:
        parser.error(f"--token-file: {err}")
    print(f"meshlib: wrote {identity} certificate (until {issued.not_after})", file=sys.stderr)


def token_authenticators(source: Any, ca: Any) -> list[Any] | None:
    """With ``--kubernetes``: service-account tokens checked by TokenReview on the source's
    API server (as istiod checks them); otherwise None, the control plane's own tokens."""
    api_client = getattr(source, "api_client", None)
    if ca is None or api_client is None:
        return None
    from .controlplane.ca import KubernetesTokenReviewer

    return [KubernetesTokenReviewer(api_client, trust_domain=ca.trust_domain)]
