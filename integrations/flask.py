"""Flask extension: ``MeshFlask(app, inbound=Inbound(workload="ratings"))``."""

from __future__ import annotations

from typing import Any

from ._inbound import Inbound
from .wsgi import MeshWSGIMiddleware

__all__ = ["MeshFlask"]


class MeshFlask:
    """Wraps ``app.wsgi_app`` with :class:`MeshWSGIMiddleware` (init_app pattern)."""

    def __init__(self, app: Any = None, inbound: Inbound | None = None) -> None:
        self.inbound = inbound or Inbound()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Any) -> None:
        app.wsgi_app = MeshWSGIMiddleware(app.wsgi_app, self.inbound)
        app.extensions["meshlib"] = self
