"""``meshlib token`` and ``meshlib bootstrap --token-file``: a certificate by CSR, the key
written only by the workload's own process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshlib.cli import main
from meshlib.controlplane import CertificateAuthority, ControlPlane

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
