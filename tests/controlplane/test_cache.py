"""VersionedSnapshotCache: versions move only on change; waiters wake across threads."""

from __future__ import annotations

import asyncio
import threading

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2

from meshlib.controlplane import (
    CLUSTER_TYPE,
    Resources,
    SnapshotCache,
    VersionedSnapshotCache,
)


def _resources(*clusters: str) -> Resources:
    return Resources(shared={CLUSTER_TYPE: {c: cluster_pb2.Cluster(name=c) for c in clusters}})


def test_version_increases_only_when_content_changes() -> None:
    cache: SnapshotCache = VersionedSnapshotCache()
    assert cache.snapshot().version == "0"
    first = cache.set_resources(_resources("a"))
    assert first.version == "1"
    assert cache.set_resources(_resources("a")) is first
    second = cache.set_resources(_resources("a", "b"))
    assert second.version == "2"
    assert sorted(second.resources(CLUSTER_TYPE)) == ["a", "b"]
    assert first.resources(CLUSTER_TYPE).keys() == {"a"}  # old snapshots are immutable
    assert cache.set_resources(_resources("a")).version == "3"


def test_wrong_resource_type_is_rejected() -> None:
    cache = VersionedSnapshotCache()
    bad = Resources(shared={CLUSTER_TYPE: {"l": listener_pb2.Listener(name="l")}})
    with pytest.raises(ValueError, match=r"is a type\.googleapis\.com/envoy\.config\.listener"):
        cache.set_resources(bad)


async def test_wait_for_change_wakes_from_another_thread() -> None:
    cache = VersionedSnapshotCache()
    cache.set_resources(_resources("a"))
    # A stale version returns at once.
    assert (await asyncio.wait_for(cache.wait_for_change("0"), 1)).version == "1"
    waiter = asyncio.ensure_future(cache.wait_for_change("1"))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    threading.Thread(target=cache.set_resources, args=(_resources("b"),)).start()
    snapshot = await asyncio.wait_for(waiter, 2)
    assert snapshot.version == "2"
    assert list(snapshot.resources(CLUSTER_TYPE)) == ["b"]


async def test_cancelled_waiter_is_forgotten() -> None:
    cache = VersionedSnapshotCache()
    waiter = asyncio.ensure_future(cache.wait_for_change("0"))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert cache._waiters == []
    assert cache.set_resources(_resources("a")).version == "1"
