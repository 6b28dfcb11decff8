"""Request mirroring (shadow traffic): which clusters get a copy of a call.

Mirrors are fire and forget: the adapter sends the copy in the background, never waits
for it and ignores its result, so a mirror can neither delay nor fail the main request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from xds_client.resources.route import MirrorPolicy

from ..routing._matchers import compile_fraction

__all__ = ["MirrorTarget", "Mirrors", "shadow_authority"]


def shadow_authority(authority: str) -> str:
    """Envoy's shadow host: ``-shadow`` appended to the host, the port kept."""
    host, sep, port = authority.rpartition(":")
    if sep and port.isdigit() and not host.endswith(":"):
        return f"{host}-shadow:{port}"
    return f"{authority}-shadow"


@dataclass(frozen=True, slots=True)
class MirrorTarget:
    """Send a copy of the call to ``cluster`` with Host ``authority(original)``."""

    cluster: str
    shadow_suffix: bool = True
    host_rewrite_literal: str = ""

    def authority(self, original: str) -> str:
        host = self.host_rewrite_literal or original
        return shadow_authority(host) if self.shadow_suffix else host


class Mirrors:
    """Compiled request_mirror_policies of one route."""

    __slots__ = ("_policies",)

    def __init__(self, policies: Sequence[MirrorPolicy]) -> None:
        self._policies = tuple(
            (
                MirrorTarget(p.cluster, p.shadow_suffix, p.host_rewrite_literal),
                compile_fraction(p.percent) if p.percent is not None else None,
            )
            for p in policies
        )

    def __bool__(self) -> bool:
        return bool(self._policies)

    def select(self) -> tuple[MirrorTarget, ...]:
        """The mirrors this call goes to (each policy samples its runtime_fraction)."""
        return tuple(t for t, sample in self._policies if sample is None or sample())
