"""What one call through the mesh came to: a status code and Envoy's response flag.

A call ends in a response or an exception. Responses the mesh made itself carry Envoy's
marks (``x-envoy-overloaded``, the bodies of its local replies); exceptions from
``meshlib`` (``Mesh(local_replies="raise")``, or before local replies) are named by class
and mapped to the flag Envoy would have logged. One place decides, for apps and tour.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import httpx

__all__ = ["Outcome", "classify", "timed"]

# Exception class name -> the response flag Envoy logs for that outcome.
_FLAGS = {
    "CircuitBreakerOverflowError": "UO",
    "Overloaded": "UO",
    "CircuitBreakerOpen": "UO",
    "RequestDropped": "UO",
    "UpstreamTimeout": "UT",
    "MeshTimeoutError": "UT",
    "NoHealthyUpstream": "UH",
    "NoHealthyUpstreamError": "UH",
    "RouteNotFound": "NR",
    "MeshConnectError": "UF",
    "ConnectError": "UF",
}
_BODIES = {
    "upstream request timeout": "UT",
    "fault filter abort": "FI",
    "no healthy upstream": "UH",
}


@dataclass(frozen=True)
class Outcome:
    """One call: ``status`` (None when it raised), ``flag`` ("-" when none), ``error``
    (the exception's class name), seconds ``elapsed``."""

    status: int | None
    flag: str = "-"
    error: str = ""
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is not None and self.status < 400

    @property
    def label(self) -> str:
        """``200``, ``503 UO``, ``CircuitBreakerOverflowError UO``..."""
        head = str(self.status) if self.status is not None else self.error
        return head if self.flag == "-" else f"{head} {self.flag}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Outcome:
        return cls(doc.get("status"), doc.get("flag", "-"), doc.get("error", ""), doc["elapsed"])


def classify(result: httpx.Response | BaseException, elapsed: float = 0.0) -> Outcome:
    """The :class:`Outcome` of a response or of the exception a call raised."""
    if isinstance(result, BaseException):
        name = type(result).__name__
        flag = getattr(result, "response_flag", None) or getattr(result, "flag", None)
        if not isinstance(flag, str):
            flag = next(
                (_FLAGS[c.__name__] for c in type(result).__mro__ if c.__name__ in _FLAGS),
                "UT" if isinstance(result, httpx.TimeoutException) else "-",
            )
        return Outcome(None, flag, name, elapsed)
    flag = "-"
    if result.headers.get("x-envoy-overloaded") == "true":
        flag = "UO"
    elif result.status_code >= 400 and "x-meshlib-workload" not in result.headers:
        # not from a BookInfo app: the mesh's own reply, known by Envoy's bodies
        flag = _BODIES.get(result.text.strip(), "-")
    return Outcome(result.status_code, flag, "", elapsed)


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response | None, Outcome]:
    """Run ``call``; its response (None if it raised) and :class:`Outcome`."""
    start = time.perf_counter()
    try:
        response = call()
    except httpx.HTTPError as exc:
        return None, classify(exc, time.perf_counter() - start)
    except Exception as exc:  # meshlib's own errors are not all httpx errors yet
        if type(exc).__module__.split(".")[0] != "meshlib":
            raise
        return None, classify(exc, time.perf_counter() - start)
    return response, classify(response, time.perf_counter() - start)
