"""``meshlib token`` and ``meshlib bootstrap --token-file``: a certificate by CSR, the key
written only by the workload's own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from meshlib.cli import main
from meshlib.controlplane import CertificateAuthority, ControlPlane
from meshlib.controlplane.ca import BootstrapTokens
from meshlib.controlplane.testing import FakeKubernetesAPI
from meshlib.security import AgentError, CertificateAgent

from .controlplane.conftest import REVIEWS_YAML, write


def test_token_then_bootstrap_by_csr(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "ca")
    with ControlPlane(write(tmp_path / "c.yaml", REVIEWS_YAML), ca=ca) as cp:
        assert main(["token", "--ca-dir", str(ca.directory), "--namespace", "shop",
                     "--service-account", "web"]) == 0  # fmt: skip
        token = tmp_path / "token"
        token.write_text(capsys.readouterr().out)
        certs = tmp_path / "certs"
        assert main(["bootstrap", "--xds", cp.address, "--pod", "web-0", "--namespace", "shop",
                     "--service-account", "web", "--cert-dir", str(certs),
                     "--token-file", str(token)]) == 0  # fmt: skip
        out = capsys.readouterr()
        assert json.loads(out.out)["node"]["metadata"]["NAMESPACE"] == "shop"
        assert "spiffe://cluster.local/ns/shop/sa/web certificate" in out.err
        chain = (certs / "cert-chain.pem").read_bytes()
        assert ca.verify(chain) == "spiffe://cluster.local/ns/shop/sa/web"
        assert (certs / "root-cert.pem").read_bytes() == ca.root_pem
        # A token for another identity is refused: a usage error naming the CA's reason.
        other = tmp_path / "other"
        other.write_text(cp.tokens.issue("spiffe://cluster.local/ns/x/sa/y") if cp.tokens else "")
        with pytest.raises(SystemExit):
            main(["bootstrap", "--xds", cp.address, "--pod", "web-0", "--namespace", "shop",
                  "--service-account", "web", "--cert-dir", str(tmp_path / "c2"),
                  "--token-file", str(other)])  # fmt: skip
        assert "PERMISSION_DENIED" in capsys.readouterr().err


def test_kubernetes_control_plane_checks_service_account_tokens(tmp_path: Path) -> None:
    """``control-plane --kubernetes --ca-dir``: a CSR is signed for a service-account token
    that TokenReview accepts, and refused for one it does not."""
    with FakeKubernetesAPI() as api:
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        proc = subprocess.Popen(
            [sys.executable, "-m", "meshlib.cli", "control-plane", "--kubernetes",
             "--kubeconfig", str(kubeconfig), "--port", "0", "--ca-dir", str(tmp_path / "ca"),
             "--init-ca"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            line = ""
            for _ in range(10):  # the CA line and INFO lines come first
                line = proc.stdout.readline()
                if "listening on" in line or not line:
                    break
            address = line.rsplit(" ", 1)[1].strip()
            identity = "spiffe://cluster.local/ns/shop/sa/web"
            token = api.service_account_token("shop", "web")
            agent = CertificateAgent(address, identity, tmp_path / "certs", token=token)
            chain = agent.rotate_now().cert_pem
            assert CertificateAuthority(tmp_path / "ca").verify(chain) == identity
            assert ("create", "/apis/authentication.k8s.io/v1/tokenreviews", {}) in api.requests
            # The CA's own bootstrap tokens are not accepted in Kubernetes mode.
            own = BootstrapTokens(CertificateAuthority(tmp_path / "ca")).issue(identity)
            with pytest.raises(AgentError, match="UNAUTHENTICATED"):
                CertificateAgent(address, identity, tmp_path / "c2", token=own).rotate_now()
        finally:
            proc.terminate()
            proc.communicate(timeout=15)
