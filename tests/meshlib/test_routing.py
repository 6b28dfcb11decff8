"""Routing semantics against Envoy's documented meaning (table-driven)."""

from __future__ import annotations

import collections
import random

import pytest

from meshlib import Call
from meshlib.resilience.timeouts import DEFAULT_ROUTE_TIMEOUT
from meshlib.routing import RouteTable
from xds_client.resources import (
    ClusterWeight,
    RouteAction,
    RouteConfigResource,
    RouteEntry,
    RouteMatch,
    VirtualHost,
)


def vhost(name: str, domains: list[str], *routes: RouteEntry) -> VirtualHost:
    default = RouteEntry("default", RouteMatch("prefix", "/"), RouteAction(name))
    return VirtualHost(name, tuple(domains), routes or (default,))


TABLE = RouteTable(
    RouteConfigResource(
        "rc",
        (
            vhost("exact", ["api.example.com", "api.example.com:8080"]),
            vhost("suffix-long", ["*.svc.example.com"]),
            vhost("suffix", ["*.example.com"]),
            vhost("prefix", ["api.*"]),
            vhost("any", ["*"]),
        ),
    )
)


@pytest.mark.parametrize(
    ("host", "cluster"),
    [
        ("api.example.com", "exact"),
        ("API.Example.COM", "exact"),  # domains are case-insensitive
        ("api.example.com:8080", "exact"),
        ("a.svc.example.com", "suffix-long"),  # the longest suffix wildcard wins
        ("www.example.com", "suffix"),
        ("api.other.org", "prefix"),  # suffix wildcards come before prefix wildcards
        ("other.org", "any"),
        (".example.com", "any"),  # a wildcard must match at least one character
    ],
)
def test_virtual_host_selection_follows_envoy_order(host: str, cluster: str) -> None:
    plan = TABLE.route(Call(host, "GET", "/", {"host": host}))
    assert plan is not None and plan.cluster == cluster


@pytest.mark.parametrize(
    ("match", "path", "hit"),
    [
        (RouteMatch("prefix", "/api"), "/api/v1", True),
        (RouteMatch("prefix", "/api"), "/apix", True),
        (RouteMatch("prefix", "/api"), "/API", False),
        (RouteMatch("prefix", "/api", case_sensitive=False), "/API/x", True),
        (RouteMatch("path", "/ping"), "/ping", True),
        (RouteMatch("path", "/ping"), "/ping?x=1", True),  # the query is not part of the path
        (RouteMatch("path", "/ping"), "/ping/", False),
        (RouteMatch("path_separated_prefix", "/api"), "/api", True),
        (RouteMatch("path_separated_prefix", "/api"), "/api/x", True),
        (RouteMatch("path_separated_prefix", "/api"), "/apix", False),
    ],
)
def test_path_matching(match: RouteMatch, path: str, hit: bool) -> None:
    table = RouteTable(
        RouteConfigResource("rc", (vhost("h", ["*"], RouteEntry("r", match, RouteAction("c"))),))
    )
    assert (table.route(Call("h:80", "GET", path)) is not None) is hit


def test_first_matching_route_wins_and_timeouts_follow_envoy() -> None:
    table = RouteTable(
        RouteConfigResource(
            "rc",
            (
                vhost(
                    "h",
                    ["*"],
                    RouteEntry(
                        "none", RouteMatch("prefix", "/slow"), RouteAction("slow", timeout=0.0)
                    ),
                    RouteEntry("set", RouteMatch("prefix", "/s"), RouteAction("s", timeout=2.5)),
                    RouteEntry("default", RouteMatch("prefix", "/"), RouteAction("d")),
                ),
            ),
        )
    )
    slow = table.route(Call("h:80", "GET", "/slow/x"))
    assert slow is not None and (slow.cluster, slow.timeout) == ("slow", None)  # 0 = no limit
    s = table.route(Call("h:80", "GET", "/s"))
    assert s is not None and (s.cluster, s.timeout) == ("s", 2.5)
    d = table.route(Call("h:80", "GET", "/other"))
    assert d is not None and d.timeout == DEFAULT_ROUTE_TIMEOUT == 15.0


def test_no_route_and_non_forwarding_route() -> None:
    table = RouteTable(
        RouteConfigResource(
            "rc",
            (
                vhost(
                    "only",
                    ["known"],
                    RouteEntry("redirect", RouteMatch("prefix", "/old"), None),
                    RouteEntry("api", RouteMatch("prefix", "/api"), RouteAction("api")),
                ),
            ),
        )
    )
    assert table.route(Call("unknown:80", "GET", "/api")) is None
    assert table.route(Call("known", "GET", "/old")) is None
    assert table.route(Call("known", "GET", "/nothing")) is None


def test_weighted_clusters_split_by_weight() -> None:
    random.seed(7)
    action = RouteAction(None, (ClusterWeight("a", 75), ClusterWeight("b", 25)))
    table = RouteTable(
        RouteConfigResource(
            "rc", (vhost("h", ["*"], RouteEntry("r", RouteMatch("prefix", "/"), action)),)
        )
    )
    counts = collections.Counter(
        p.cluster for _ in range(4000) if (p := table.route(Call("h", "GET", "/"))) is not None
    )
    # chi-square, 1 degree of freedom, p = 0.001 -> 10.83
    chi2 = (counts["a"] - 3000) ** 2 / 3000 + (counts["b"] - 1000) ** 2 / 1000
    assert chi2 < 10.83, counts
