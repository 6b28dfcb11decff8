"""BookInfo's four services in Python, each calling the next through the mesh.

As in Istio's sample: productpage (Flask) calls details and reviews with a 3 s timeout
(reviews tried twice); reviews v2 and v3 call ratings over HTTP with a 10 s timeout and
show its stars (v2 black, v3 red); v1 does not call ratings. Every call carries the
``end-user`` header, so rules that match on it apply at every hop. Each response says
which pod answered (``x-meshlib-workload``) and what the calls behind it came to.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response
from flask import Flask, jsonify, make_response, redirect, render_template_string, request

from meshlib.context import current_request

from ._outcomes import Outcome, timed
from ._platform import SERVICE_PORT, Workload

__all__ = ["BOOK", "Timing", "WorkloadState", "details_app", "productpage_app", "ratings_app",
           "reviews_app"]

WORKLOAD_HEADER = "x-meshlib-workload"
BOOK = {
    "id": 0,
    "title": "The Comedy of Errors",
    "summary": "Two sets of identical twins, separated at birth, land in the same town on "
    "the same day: Shakespeare's shortest play, and one of his most farcical.",
}
DETAILS = {
    "author": "William Shakespeare",
    "year": 1595,
    "type": "paperback",
    "pages": 200,
    "publisher": "PublisherA",
    "language": "English",
    "ISBN-10": "1234567890",
    "ISBN-13": "123-1234567890",
}
REVIEWS = [
    ("Reviewer1", "An extremely entertaining play by Shakespeare. The slapstick humour is "
     "refreshing!"),
    ("Reviewer2", "Absolutely fun and entertaining. The play lacks thematic depth when "
     "compared to other plays by Shakespeare."),
]
RATINGS = {"Reviewer1": 5, "Reviewer2": 4}
STAR_COLOR = {"v2": "black", "v3": "red"}


@dataclass(frozen=True)
class Timing:
    """The applications' own timeouts (Istio's: 3 s, 10 s), scaled for a short run."""

    scale: float = 1.0

    @property
    def productpage_timeout(self) -> float:
        return 3.0 * self.scale

    @property
    def reviews_timeout(self) -> float:
        return 10.0 * self.scale


@dataclass
class WorkloadState:
    """What the tour reads and steers in one pod: requests it served, by Host header
    (a mirrored copy arrives as ``reviews-shadow``), and whether it answers 503."""

    workload: Workload
    failing: bool = False
    hosts: collections.Counter[str] = field(default_factory=collections.Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def hit(self, host: str) -> None:
        with self._lock:
            self.hosts[host.split(":", 1)[0]] += 1

    @property
    def served(self) -> int:
        with self._lock:
            return sum(self.hosts.values())


def _user_headers(user: str | None) -> dict[str, str]:
    return {"end-user": user} if user else {}


def _fastapi(state: WorkloadState) -> FastAPI:
    app = FastAPI(title=state.workload.pod, docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def mark(request: Request, call_next: Any) -> Response:
        state.hit(request.headers.get("host", ""))
        if state.failing and request.url.path != "/health":
            response: Response = Response("replica failing", status_code=503)
        else:
            response = await call_next(request)
        response.headers[WORKLOAD_HEADER] = state.workload.pod
        return response

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def details_app(state: WorkloadState) -> FastAPI:
    """details: the book's facts (20 ms of work per request, as a database lookup)."""
    app = _fastapi(state)

    @app.get("/details/{book}")
    async def details(book: int) -> dict[str, Any]:
        await asyncio.sleep(0.02)
        return {"id": book, **DETAILS, "pod": state.workload.pod}

    return app


def ratings_app(state: WorkloadState) -> FastAPI:
    """ratings: stars per reviewer."""
    app = _fastapi(state)

    @app.get("/ratings/{book}")
    async def ratings(book: int) -> dict[str, Any]:
        return {"id": book, "ratings": RATINGS, "pod": state.workload.pod}

    return app


def reviews_app(state: WorkloadState, client: httpx.Client, timing: Timing) -> FastAPI:
    """reviews: two reviews; v2 and v3 add ratings' stars (black, red)."""

    app = _fastapi(state)
    version = state.workload.version

    @app.get("/reviews/{book}")
    def reviews(book: int, request: Request) -> dict[str, Any]:
        ctx = current_request()
        doc: dict[str, Any] = {
            "id": book,
            "podname": state.workload.pod,
            "version": version,
            "peer": ctx.peer_identity if ctx else None,
            "reviews": [{"reviewer": r, "text": t} for r, t in REVIEWS],
        }
        if version == "v1":
            return doc
        response, outcome = timed(
            lambda: client.get(
                f"http://ratings:{SERVICE_PORT}/ratings/{book}",
                headers=_user_headers(request.headers.get("end-user")),
                timeout=timing.reviews_timeout,
            )
        )
        doc["ratings_call"] = outcome.to_json()
        stars = response.json()["ratings"] if response is not None and outcome.ok else None
        for review in doc["reviews"]:
            review["rating"] = (
                {"stars": stars[review["reviewer"]], "color": STAR_COLOR[version]}
                if stars
                else {"error": "Ratings service is currently unavailable"}
            )
        return doc

    return app


def _call_reviews(
    client: httpx.Client, user: str | None, timing: Timing
) -> tuple[dict[str, Any] | None, list[Outcome]]:
    """Istio's productpage: reviews with a 3 s timeout, tried twice."""
    tries: list[Outcome] = []
    for _ in range(2):
        response, outcome = timed(
            lambda: client.get(
                f"http://reviews:{SERVICE_PORT}/reviews/0",
                headers=_user_headers(user),
                timeout=timing.productpage_timeout,
            )
        )
        tries.append(outcome)
        if response is not None and outcome.ok:
            return response.json(), tries
    return None, tries


def product_view(client: httpx.Client, user: str | None, timing: Timing) -> dict[str, Any]:
    """What productpage shows: the book, its details, its reviews, and how each call went."""
    response, details_call = timed(
        lambda: client.get(
            f"http://details:{SERVICE_PORT}/details/0",
            headers=_user_headers(user),
            timeout=timing.productpage_timeout,
        )
    )
    reviews, tries = _call_reviews(client, user, timing)
    return {
        "user": user,
        "book": BOOK,
        "details": response.json() if response is not None and details_call.ok else None,
        "details_call": details_call.to_json(),
        "reviews": reviews,
        "reviews_calls": [t.to_json() for t in tries],
    }


def productpage_app(state: WorkloadState, client: httpx.Client, timing: Timing) -> Flask:
    """productpage: the HTML page (``/productpage``) and its data (``/api/v1/products/0/view``)."""
    app = Flask("productpage")
    template = (resources.files("meshlib.demo") / "productpage.html").read_text()

    def user() -> str | None:
        return request.args.get("u") or request.cookies.get("user") or None

    @app.after_request
    def mark(response: Any) -> Any:
        state.hit(request.headers.get("host", ""))
        response.headers[WORKLOAD_HEADER] = state.workload.pod
        return response

    @app.get("/health")
    def health() -> Any:
        return {"status": "ok"}

    @app.get("/")
    def index() -> Any:
        return redirect("/productpage")

    @app.post("/login")
    def login() -> Any:
        response = make_response(redirect("/productpage"))
        response.set_cookie("user", request.form.get("username", ""))
        return response

    @app.post("/logout")
    def logout() -> Any:
        response = make_response(redirect("/productpage"))
        response.delete_cookie("user")
        return response

    @app.get("/productpage")
    def page() -> Any:
        view = product_view(client, user(), timing)
        return render_template_string(template, view=view, outcome=_outcome_label)

    @app.get("/api/v1/products/<int:book>/view")
    def view(book: int) -> Any:
        return jsonify(product_view(client, user(), timing))

    return app


def _outcome_label(doc: Mapping[str, Any]) -> str:
    return Outcome.from_json(dict(doc)).label
