"""Counting what traffic came to, and showing it as one short table per step."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ._outcomes import Outcome

__all__ = ["Tally", "render", "run_traffic"]

T = TypeVar("T")

INGRESS = "ingress → productpage"
DETAILS = "productpage → details"
REVIEWS = "productpage → reviews"
RATINGS = "reviews → ratings"


def _counts(counter: collections.Counter[str]) -> str:
    return "  ".join(f"{k} x{v}" for k, v in sorted(counter.items())) or "—"


@dataclass
class Tally:
    """One row: who sent the traffic, how many requests, who served them, and the
    outcome labels (``200``, ``504 UT``, ``CircuitBreakerOverflowError UO``) per hop."""

    who: str
    requests: int = 0
    served_by: collections.Counter[str] = field(default_factory=collections.Counter)
    hops: dict[str, collections.Counter[str]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )
    peers: collections.Counter[str] = field(default_factory=collections.Counter)
    elapsed: list[float] = field(default_factory=list)

    def add(self, hop: str, outcome: Outcome, served_by: str | None = None) -> None:
        """Count one direct call (``served_by``: the pod that answered, if any)."""
        self.requests += 1
        self.hops[hop][outcome.label] += 1
        self.served_by[served_by or "—"] += 1
        self.elapsed.append(outcome.elapsed)

    def add_view(self, ingress: Outcome, view: dict[str, Any] | None) -> None:
        """Count one productpage request and the calls behind it."""
        self.requests += 1
        self.hops[INGRESS][ingress.label] += 1
        self.elapsed.append(ingress.elapsed)
        if view is None:
            self.served_by["—"] += 1
            return
        self.hops[DETAILS][Outcome.from_json(view["details_call"]).label] += 1
        for attempt in view["reviews_calls"]:
            self.hops[REVIEWS][Outcome.from_json(attempt).label] += 1
        reviews = view.get("reviews")
        if reviews is None:
            self.served_by["reviews unavailable"] += 1
            return
        self.served_by[reviews["podname"]] += 1
        if reviews.get("peer"):
            self.peers[reviews["peer"]] += 1
        if "ratings_call" in reviews:
            self.hops[RATINGS][Outcome.from_json(reviews["ratings_call"]).label] += 1

    def labels(self, hop: str) -> collections.Counter[str]:
        """Outcome label -> count on ``hop``."""
        return self.hops.get(hop, collections.Counter())

    def versions(self) -> set[str]:
        """The reviews versions (``v1``...) that answered."""
        return {pod.split("-")[1] for pod in self.served_by if pod.startswith("reviews-")}


def run_traffic(
    console: Console,
    label: str,
    jobs: Sequence[Callable[[], T]],
    concurrency: int = 1,
) -> list[T]:
    """Run ``jobs`` (``concurrency`` at a time) under a progress bar; their results in order."""
    results: list[Any] = [None] * len(jobs)
    columns = (
        TextColumn("  [cyan]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(label, total=len(jobs))

        def one(i: int) -> None:
            results[i] = jobs[i]()
            progress.advance(task)

        if concurrency <= 1:
            for i in range(len(jobs)):
                one(i)
        else:
            with ThreadPoolExecutor(concurrency) as pool:
                list(pool.map(one, range(len(jobs))))
    return results


def render(
    title: str,
    tallies: Iterable[Tally],
    hops: Sequence[str],
    footer: str = "",
) -> Table:
    """The step's table: a row per tally, a column per hop."""
    table = Table(title=title, title_justify="left", caption=footer or None,
                  caption_justify="left")
    table.add_column("traffic")
    table.add_column("requests", justify="right")
    table.add_column("served by")
    for hop in hops:
        table.add_column(hop)
    for t in tallies:
        table.add_row(
            t.who,
            str(t.requests),
            _counts(t.served_by),
            *(_counts(t.labels(hop)) for hop in hops),
        )
    return table
