"""Shared pieces: the scripted ADS server, clients that are closed after the test, and a
watcher that records events and lets a test wait for one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from xds_client import Backoff, XdsClient, load_bootstrap
from xds_client.testing import ScriptedAdsServer

FAST = Backoff(base=0.05, maximum=0.2)


class Recorder:
    """A watcher keeping ``(kind, name, value)`` events: changed / error / ambient."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []
        self._cond = threading.Condition()

    def _add(self, kind: str, name: str, value: Any) -> None:
        with self._cond:
            self.events.append((kind, name, value))
            self._cond.notify_all()

    def on_resource_changed(self, name: str, resource: Any) -> None:
        self._add("changed", name, resource)

    def on_resource_error(self, name: str, error: Exception) -> None:
        self._add("error", name, error)

    def on_ambient_error(self, name: str, error: Exception) -> None:
        self._add("ambient", name, error)

    def wait(
        self, kind: str, predicate: Callable[[Any], bool] = lambda v: True, timeout: float = 10
    ) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for k, _, value in self.events:
                    if k == kind and predicate(value):
                        return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {kind} event; saw {self.events}")
                self._cond.wait(left)

    def kinds(self) -> list[str]:
        with self._cond:
            return [k for k, _, _ in self.events]


@pytest.fixture
def server() -> Iterator[ScriptedAdsServer]:
    with ScriptedAdsServer() as s:
        yield s


@pytest.fixture
def make_client() -> Iterator[Callable[..., XdsClient]]:
    clients: list[XdsClient] = []

    def make(bootstrap: dict[str, Any], **kwargs: Any) -> XdsClient:
        kwargs.setdefault("backoff", FAST)
        client = XdsClient(load_bootstrap(bootstrap), **kwargs)
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.close()
