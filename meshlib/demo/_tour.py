"""Istio's traffic-management tour on BookInfo, one applied file at a time.

Each step applies Istio's YAML to the running control plane, sends traffic, prints a
table of what happened and checks that the traffic did what the step demonstrates; the
tour passes only if every check held. ``fast=True`` (CI) multiplies every delay and
timeout by 0.4 and sends fewer requests.
"""

from __future__ import annotations

import collections
import logging
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from rich.console import Console

from ._bookinfo import BookInfo
from ._outcomes import Outcome, timed
from ._platform import SERVICE_PORT, istio_file
from ._tally import DETAILS, INGRESS, RATINGS, REVIEWS, Tally, render, run_traffic

__all__ = ["STEPS", "Step", "Tour", "run_tour"]

PRODUCTPAGE_SA = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
LEGACY = "plain HTTP → productpage"
#: The pods that call others (retries and ejections are counted on the calling side).
CALLERS = ("istio-ingressgateway", "fortio", "productpage-v1", "reviews-v2", "reviews-v3")
#: CI mode's factor on delays and timeouts: short, with margins a loaded machine keeps
FAST_SCALE = 0.4


@dataclass
class Tour:
    """What a step works with: the running BookInfo, the console, the run's size."""

    bookinfo: BookInfo
    console: Console
    fast: bool
    checks: list[tuple[str, bool]] = field(default_factory=list)

    def n(self, full: int, fast: int) -> int:
        return fast if self.fast else full

    def apply(self, *names: str) -> None:
        """Apply Istio files by name (as ``kubectl apply -f``), printing each."""
        for name in names:
            objects = self.bookinfo.apply(istio_file(name))
            self.console.print(f"  [bold]apply[/] {name}  [dim]({', '.join(objects)})[/]")

    def check(self, what: str, ok: bool) -> None:
        """Record one behaviour the step must show."""
        self.checks.append((what, bool(ok)))
        mark = "[green]✓[/]" if ok else "[red]✗[/]"
        self.console.print(f"  {mark} {what}")

    def views(
        self, who: str, n: int, user: str | None = None, concurrency: int = 1
    ) -> Tally:
        """``n`` productpage requests through the ingress gateway's mesh client."""
        tally = Tally(who)
        params = {"u": user} if user else {}
        with self.bookinfo.client(timeout=60) as client:

            def one() -> tuple[Outcome, dict[str, Any] | None]:
                response, outcome = timed(
                    lambda: client.get(
                        f"http://productpage:{SERVICE_PORT}/api/v1/products/0/view",
                        params=params,
                    )
                )
                ok = response is not None and outcome.ok
                return outcome, response.json() if ok and response is not None else None

            for outcome, view in run_traffic(self.console, who, [one] * n, concurrency):
                tally.add_view(outcome, view)
        return tally

    def direct(
        self,
        who: str,
        client: httpx.Client,
        url: str,
        n: int,
        concurrency: int = 1,
        hop: str = "",
        **kwargs: Any,
    ) -> Tally:
        """``n`` GETs of ``url`` with ``client``, counted by the pod that answered, under
        ``hop`` (default ``→ host``)."""
        tally = Tally(who)
        hop = hop or f"→ {url.split('/')[2].split(':')[0]}"

        def one() -> tuple[Outcome, str | None]:
            response, outcome = timed(lambda: client.get(url, **kwargs))
            pod = response.headers.get("x-meshlib-workload") if response is not None else None
            return outcome, pod

        for outcome, pod in run_traffic(self.console, who, [one] * n, concurrency):
            tally.add(hop, outcome, pod)
        return tally

    def counters(self, pod: str, *needles: str) -> int:
        """The sum of ``pod``'s stats whose name contains any of ``needles``."""
        pattern = "|".join(re.escape(n) for n in needles)
        return sum(self.bookinfo.stats(pod, pattern).values())

    def mesh_counters(self) -> tuple[int, int]:
        """Retries and ejected endpoints now, summed over the callers' meshes."""
        retries = ejected = 0
        pattern = r"\.(upstream_rq_retry|outlier_detection\.ejections_active)$"
        for pod in CALLERS:
            stats = self.bookinfo.stats(pod, pattern)
            for name, value in stats.items():
                if name.endswith(".upstream_rq_retry"):
                    retries += value
                else:
                    ejected += value
        return retries, ejected


@dataclass(frozen=True)
class Step:
    title: str
    run: Callable[[Tour], None]


def _chain_table(tour: Tour, title: str, *tallies: Tally, hops: tuple[str, ...] = ()) -> None:
    tour.console.print(render(title, tallies, hops or (REVIEWS, RATINGS)))


# -- the steps ---------------------------------------------------------------------------
def step_no_rules(tour: Tour) -> None:
    anon = tour.views("anonymous", tour.n(30, 15))
    _chain_table(tour, "No rules yet: reviews round-robin over its three versions", anon)
    tour.check("every request answered 200", anon.labels(INGRESS) == {"200": anon.requests})
    tour.check("reviews v1, v2 and v3 all answered", anon.versions() == {"v1", "v2", "v3"})


def step_all_v1(tour: Tour) -> None:
    tour.apply("destination-rule-all.yaml", "virtual-service-all-v1.yaml")
    anon = tour.views("anonymous", tour.n(30, 15))
    jason = tour.views("jason", tour.n(10, 5), user="jason")
    _chain_table(tour, "Request routing: all traffic to v1", anon, jason)
    tour.check("only reviews v1 answered", anon.versions() | jason.versions() == {"v1"})
    tour.check("v1 calls no ratings", not anon.labels(RATINGS) and not jason.labels(RATINGS))


def step_mtls(tour: Tour) -> None:
    port = tour.bookinfo.ports["productpage-v1"]
    url = f"http://127.0.0.1:{port}/api/v1/products/0/view"
    hop = LEGACY
    with httpx.Client(timeout=10, headers={"host": "productpage"}) as legacy:
        before = tour.direct("legacy (no mesh), PERMISSIVE", legacy, url, 5, hop=hop)
        tour.apply("peer-authentication-mesh-strict.yaml", "destination-rule-all-mtls.yaml")
        after = tour.direct("legacy (no mesh), STRICT", legacy, url, 5, hop=hop)
    mesh = tour.views("mesh (ingress gateway), STRICT", tour.n(20, 10))
    tour.console.print(
        render("Mutual TLS: STRICT for the whole mesh", (before, after), (LEGACY,))
    )
    _chain_table(tour, "... while mesh traffic goes on over mTLS", mesh, hops=(DETAILS, REVIEWS))
    tour.console.print(f"  reviews saw callers: {dict(mesh.peers)}")
    tour.check("a caller without a mesh certificate got 200 under PERMISSIVE",
               before.labels(LEGACY) == {"200": before.requests})
    tour.check("... and is refused under STRICT",
               not any(label.startswith("200") for label in after.labels(LEGACY)))
    tour.check("mesh callers still get 200", mesh.labels(REVIEWS) == {"200": mesh.requests})
    tour.check("reviews saw productpage's SPIFFE ID", set(mesh.peers) == {PRODUCTPAGE_SA})


def step_jason_v2(tour: Tour) -> None:
    tour.apply("virtual-service-reviews-test-v2.yaml")
    anon = tour.views("anonymous", tour.n(20, 10))
    jason = tour.views("jason", tour.n(20, 10), user="jason")
    _chain_table(tour, "Request routing: end-user jason to v2", anon, jason)
    tour.check("jason sees only v2 (black stars)", jason.versions() == {"v2"})
    tour.check("everyone else sees only v1", anon.versions() == {"v1"})
    tour.check("v2 got ratings", jason.labels(RATINGS) == {"200": jason.requests})


def step_delay(tour: Tour) -> None:
    tour.apply("virtual-service-ratings-test-delay.yaml")
    timing = tour.bookinfo.timing
    jason = tour.views("jason", 2, user="jason", concurrency=2)
    anon = tour.views("anonymous", tour.n(10, 5))
    _chain_table(tour, f"Fault injection: a {7 * tour.bookinfo.scale:g} s delay into ratings "
                 f"for jason; productpage gives up after 2 x {timing.productpage_timeout:g} s",
                 anon, jason)
    tries = jason.labels(REVIEWS)
    tour.check("jason's reviews are unavailable", jason.served_by == {"reviews unavailable": 2})
    tour.check(
        "productpage's calls to reviews timed out, twice each",
        sum(tries.values()) == 4 and all(not k.startswith("2") for k in tries),
    )
    tour.check(f"jason waited ~ 2 x {timing.productpage_timeout:g} s",
               all(e >= 2 * timing.productpage_timeout * 0.9 for e in jason.elapsed))
    tour.check("others are not delayed: v1, which calls no ratings",
               anon.versions() == {"v1"} and not anon.labels(RATINGS))


def step_abort(tour: Tour) -> None:
    tour.apply("virtual-service-ratings-test-abort.yaml")
    jason = tour.views("jason", tour.n(10, 5), user="jason")
    anon = tour.views("anonymous", tour.n(10, 5))
    _chain_table(tour, "Fault injection: HTTP 500 from ratings for jason", anon, jason)
    tour.check("reviews v2 answered jason", jason.versions() == {"v2"})
    tour.check("every ratings call for jason was aborted: 500 FI",
               jason.labels(RATINGS) == {"500 FI": jason.requests})


def step_shift(tour: Tour) -> None:
    tour.apply("virtual-service-all-v1.yaml", "virtual-service-reviews-50-v3.yaml")
    n = tour.n(100, 60)
    anon = tour.views("anonymous", n, concurrency=4)
    _chain_table(tour, "Traffic shifting: 50% v1, 50% v3 (red stars)", anon)
    v1, v3 = anon.served_by.get("reviews-v1", 0), anon.served_by.get("reviews-v3", 0)
    low = n / 2 - 3.5 * (n * 0.25) ** 0.5  # 3.5 sigma of a fair binomial
    tour.check(f"v1 and v3 each between {low:.0f} and {n - low:.0f} of {n}",
               v1 + v3 == n and low <= v1 <= n - low)


def step_timeout(tour: Tour) -> None:
    scale = tour.bookinfo.scale
    tour.apply("virtual-service-reviews-v2.yaml", "virtual-service-ratings-delay-2s.yaml")
    slow = tour.views(f"anonymous, ratings delayed {2 * scale:g} s", 2, concurrency=2)
    tour.apply("virtual-service-reviews-v2-timeout.yaml")
    cut = tour.views(f"anonymous, reviews timeout {0.5 * scale:g} s", 4, concurrency=4)
    _chain_table(tour, "Request timeouts: a route timeout cuts the slow call", slow, cut)
    route_timeout = 0.5 * scale
    tour.check("before: slow but served by v2 with ratings", slow.versions() == {"v2"})
    tour.check("after: every productpage → reviews try ended in a timeout (UT)",
               all("UT" in k for k in cut.labels(REVIEWS)) and sum(cut.labels(REVIEWS).values())
               == 8)
    page_timeout = tour.bookinfo.timing.productpage_timeout
    # two tries of the route's timeout each, far less than one of productpage's own
    tour.check(f"... after the route's {route_timeout:g} s, not productpage's {page_timeout:g} s",
               all(e < route_timeout + page_timeout for e in cut.elapsed))


def step_breaker(tour: Tour) -> None:
    tour.apply("virtual-service-all-v1.yaml", "destination-rule-details-circuit-breaker.yaml")
    url = f"http://details:{SERVICE_PORT}/details/0"
    with tour.bookinfo.client("fortio", timeout=10) as fortio:
        load = tour.direct("fortio -c 4 -n 40", fortio, url, 40, concurrency=4)
    overflow = tour.counters("fortio", ".upstream_rq_pending_overflow")
    footer = f"fortio's upstream_rq_pending_overflow: {overflow}"
    title = "Circuit breaking: 1 connection, 1 pending request"
    tour.console.print(render(title, (load,), ("→ details",), footer=footer))
    labels = load.labels("→ details")
    tour.check("some requests were served", labels.get("200", 0) > 0)
    tour.check("the breaker refused the overflow (UO)",
               sum(v for k, v in labels.items() if "UO" in k) > 0)


def step_outlier(tour: Tour) -> None:
    failing = tour.bookinfo.state("details-v1-1")
    failing.failing = True
    url = f"http://details:{SERVICE_PORT}/details/0"
    try:
        with tour.bookinfo.client("fortio", timeout=10) as fortio:
            load = tour.direct("fortio, details-v1-1 answering 503", fortio, url, tour.n(20, 12))
        ejections = tour.counters("fortio", ".outlier_detection.ejections_active")
    finally:
        failing.failing = False
    retries = tour.counters("fortio", ".upstream_rq_retry")
    footer = f"fortio: outlier_detection.ejections_active {ejections}, upstream_rq_retry {retries}"
    title = "Outlier detection: one 5xx ejects the replica"
    tour.console.print(render(title, (load,), ("→ details",), footer=footer))
    errors = sum(v for k, v in load.labels("→ details").items() if not k.startswith("2"))
    tour.check("details-v1-1 was ejected after its first 5xx", ejections == 1 and errors == 1)
    tour.check("the rest was served by details-v1-0",
               load.served_by.get("details-v1-0", 0) >= load.requests - 1)


def step_mirror(tour: Tour) -> None:
    v2 = tour.bookinfo.state("reviews-v2")
    before = v2.hosts["reviews-shadow"]
    tour.apply("virtual-service-reviews-mirror-v2.yaml")
    n = tour.n(20, 10)
    anon = tour.views("anonymous", n)
    deadline = time.monotonic() + 5
    while v2.hosts["reviews-shadow"] - before < n and time.monotonic() < deadline:
        time.sleep(0.05)  # mirrored copies are fire-and-forget
    mirrored = v2.hosts["reviews-shadow"] - before
    _chain_table(tour, "Mirroring: v1 answers, v2 gets a copy", anon)
    tour.console.print(f"  reviews-v2 received {mirrored} mirrored requests (Host reviews-shadow)")
    tour.check("every answer came from v1", anon.versions() == {"v1"})
    tour.check("v2 received a copy of every request", mirrored == n)


def step_authz(tour: Tour) -> None:
    url = f"http://reviews:{SERVICE_PORT}/reviews/0"
    with tour.bookinfo.client("fortio", timeout=10) as fortio:
        before = tour.direct("fortio → reviews, no policy", fortio, url, 3)
        tour.apply("authorization-policy-bookinfo-viewers.yaml")
        after = tour.direct("fortio → reviews, viewers only", fortio, url, 3)
    page = tour.views("ingress → productpage", tour.n(10, 5))
    tour.console.print(render("Authorization: only productpage may read reviews",
                              (before, after), ("→ reviews",)))
    _chain_table(tour, "... and productpage still can", page, hops=(DETAILS, REVIEWS))
    tour.check("fortio could read reviews before", before.labels("→ reviews") == {"200": 3})
    tour.check("fortio is denied now (403)", after.labels("→ reviews") == {"403": 3})
    tour.check("productpage still reads details and reviews",
               page.labels(REVIEWS) == {"200": page.requests}
               and page.labels(DETAILS) == {"200": page.requests})


STEPS: tuple[Step, ...] = (
    Step("BookInfo, no routing rules", step_no_rules),
    Step("Request routing: all to v1", step_all_v1),
    Step("Mutual TLS: STRICT", step_mtls),
    Step("Request routing: jason to v2", step_jason_v2),
    Step("Fault injection: delay", step_delay),
    Step("Fault injection: abort", step_abort),
    Step("Traffic shifting: 50/50", step_shift),
    Step("Request timeouts", step_timeout),
    Step("Circuit breaking", step_breaker),
    Step("Outlier detection", step_outlier),
    Step("Mirroring", step_mirror),
    Step("Authorization", step_authz),
)


def run_tour(*, fast: bool = False, console: Console | None = None) -> int:
    """Run every step on a fresh BookInfo; 0 if every check held, else 1."""
    console = console or Console(width=None if sys.stdout.isatty() else 120)
    scale = FAST_SCALE if fast else 1.0
    started = time.monotonic()
    failed: collections.Counter[str] = collections.Counter()
    mode = f" (CI mode: delays and timeouts x {FAST_SCALE:g})" if fast else ""
    console.rule(f"[bold]BookInfo, proxyless: Istio's tour{mode}")
    for name in ("werkzeug", "uvicorn.error"):  # a refused plaintext caller is expected
        logging.getLogger(name).setLevel(logging.ERROR)
    with console.status("starting the control plane and 9 pods"):
        bookinfo = BookInfo(scale=scale).start()
    try:
        console.print(f"control plane {bookinfo.xds}, config folder {bookinfo.config_dir}")
        tour = Tour(bookinfo, console, fast)
        for i, step in enumerate(STEPS, 1):
            console.rule(f"[bold]{i}. {step.title}", align="left")
            begin = len(tour.checks)
            retries, ejected = tour.mesh_counters()
            step_started = time.monotonic()
            try:
                step.run(tour)
            except Exception as exc:  # a step that cannot run has failed; go on
                console.print_exception(max_frames=5)
                tour.check(f"step ran ({type(exc).__name__}: {exc})", False)
            took = time.monotonic() - step_started
            now_retries, now_ejected = tour.mesh_counters()
            console.print(f"  [dim]mesh: {now_retries - retries} retries, "
                          f"{now_ejected} endpoints ejected ({now_ejected - ejected:+d}); "
                          f"{took:.1f} s[/]")
            failed.update(step.title for _, ok in tour.checks[begin:] if not ok)
        cp = bookinfo.control_plane
        problems, nacks = (cp.problems, cp.nacks()) if cp is not None else ((), [])
    finally:
        bookinfo.stop()
    tour.check("the control plane accepted every file", not problems)
    tour.check("no client NACKed anything", not nacks)
    elapsed = time.monotonic() - started
    passed = sum(ok for _, ok in tour.checks)
    console.rule()
    if failed or passed != len(tour.checks):
        console.print(f"[red bold]tour FAILED[/]: {len(tour.checks) - passed} of "
                      f"{len(tour.checks)} checks, in {', '.join(failed) or 'the end checks'} "
                      f"({elapsed:.0f} s)")
        return 1
    console.print(f"[green bold]tour OK[/]: {passed} checks in {len(STEPS)} steps, {elapsed:.0f} s")
    return 0
