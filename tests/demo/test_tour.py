"""The BookInfo tour in CI mode: every step applies Istio's YAML and sees its behaviour."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from meshlib.demo import STEPS, run_tour


@pytest.mark.timeout(150)
def test_the_tour_passes_every_step_in_ci_mode() -> None:
    out = io.StringIO()
    status = run_tour(fast=True, console=Console(file=out, width=120))
    text = out.getvalue()
    assert status == 0, text
    for i, step in enumerate(STEPS, 1):
        assert f"{i}. {step.title}" in text
    assert "✗" not in text and "tour OK" in text
    # the behaviours are in the tables, not only in the checks
    assert "500 FI" in text and "UO" in text and "403" in text
