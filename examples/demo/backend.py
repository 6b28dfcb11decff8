"""A small FastAPI service; each replica says who it is."""

import os

from fastapi import FastAPI

app = FastAPI()
REPLICA = os.environ.get("REPLICA", "reviews")


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/reviews/{item}")
def reviews(item: int) -> dict[str, object]:
    return {"replica": REPLICA, "item": item, "stars": 1 + item % 5}
