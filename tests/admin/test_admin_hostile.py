"""Hostile admin queries while mesh requests run: each gets a 400 with a message (or,
for a pattern only a backtracking engine chokes on, a quick answer from RE2), and the
data path keeps serving throughout."""

from __future__ import annotations

import threading

import httpx

from tests.admin.conftest import URL, Live

# Catastrophic for a backtracking engine (Python's re) on any long stat name.
PATHOLOGICAL = "^(.*.*.*.*.*)*[^a-z]{40}$"
HOSTILE = {
    "huge": ("/stats?filter=" + "a" * 5000, 400, "longer than"),
    "invalid regex": ("/stats?filter=(", 400, "invalid regular expression"),
    "nested repetition": ("/stats?filter=" + "(a{1000}){1000}", 400, "filter"),
    "invalid UTF-8": ("/stats?filter=%ff%fe", 400, "UTF-8"),
    "many params": ("/stats?" + "&".join(f"p{i}=1" for i in range(200)), 400, "parameters"),
    "unknown config_dump resource": ("/config_dump?resource=nonsense", 404, "resource"),
    "invalid config_dump mask": ("/config_dump?mask=no_such_field", 400, "mask"),
}


def test_hostile_queries_are_refused_and_never_stall_requests(live: Live) -> None:
    stop = threading.Event()
    served: list[int] = []
    failed: list[BaseException] = []

    def traffic() -> None:
        with live.mesh.httpx_client(timeout=10) as client:
            for i in range(5000):  # bounded in count, and stopped when the queries end
                if stop.is_set():
                    break
                try:
                    served.append(client.get(f"{URL}/reviews/h{i}").status_code)
                except httpx.HTTPError as exc:
                    failed.append(exc)

    worker = threading.Thread(target=traffic, daemon=True)
    worker.start()
    try:
        during: dict[str, int] = {}
        for what, (path, status, message) in HOSTILE.items():
            before = len(served)
            response = httpx.get(live.admin.url + path, timeout=30)
            assert response.status_code == status, (what, response.text)
            assert message in response.text, (what, response.text)
            during[what] = len(served) - before
        before = len(served)
        response = httpx.get(live.admin.url + "/stats", params={"filter": PATHOLOGICAL}, timeout=30)
        assert response.status_code == 200 and response.text == ""
        during["pathological"] = len(served) - before
    finally:
        stop.set()
        worker.join(timeout=30)
    print(f"hostile admin queries: {len(served)} requests served meanwhile, {len(failed)} failed")
    print(f"  requests completed during each query: {during}")
    assert not failed
    assert served and set(served) == {200}
