"""Header mutations: request/response headers added and removed at the weighted-cluster,
route, virtual-host and route-configuration levels, in Envoy's order."""

from __future__ import annotations

from collections.abc import Sequence

from xds_client.resources.route import HeaderMutations, HeaderToAdd

__all__ = ["HeaderList", "MutationChain"]

HeaderList = list[tuple[str, str]]
"""Headers as (lower-case name, value) pairs; repeated names are separate entries."""


def _apply(headers: HeaderList, remove: tuple[str, ...], add: tuple[HeaderToAdd, ...]) -> None:
    if remove:
        gone = set(remove)
        headers[:] = [h for h in headers if h[0] not in gone]
    for h in add:
        if not h.value and not h.keep_empty_value:
            continue
        present = any(name == h.name for name, _ in headers)
        if h.action == "append_if_exists_or_add":
            headers.append((h.name, h.value))
        elif h.action == "add_if_absent":
            if not present:
                headers.append((h.name, h.value))
        elif h.action == "overwrite_if_exists_or_add" or present:
            headers[:] = [x for x in headers if x[0] != h.name]
            headers.append((h.name, h.value))


class MutationChain:
    """The mutation levels that apply to one route choice, in application order.

    Envoy applies the most specific level first (weighted cluster, route, virtual host,
    route configuration), so a less specific OVERWRITE wins; with
    ``most_specific_header_mutations_wins`` the order is reversed.
    """

    __slots__ = ("_levels", "empty", "response_empty")

    def __init__(self, levels: Sequence[HeaderMutations], most_specific_wins: bool) -> None:
        kept = [m for m in levels if not m.empty]
        self._levels = tuple(reversed(kept) if most_specific_wins else kept)
        self.empty = not self._levels  # no mutation at any level
        self.response_empty = not any(m.response_add or m.response_remove for m in kept)

    def request(self, headers: HeaderList) -> HeaderList:
        """Mutate ``headers`` in place for the upstream request; returns it."""
        for m in self._levels:
            _apply(headers, m.request_remove, m.request_add)
        return headers

    def response(self, headers: HeaderList) -> HeaderList:
        """Mutate ``headers`` in place for the response to the application; returns it."""
        for m in self._levels:
            _apply(headers, m.response_remove, m.response_add)
        return headers
