"""BookInfo, proxyless: Istio's sample application and its traffic-management tour.

Istio's BookInfo in Python with no sidecar: productpage (Flask) calls details and
reviews (FastAPI); reviews v2 and v3 call ratings (FastAPI, over HTTP). Every pod has its
own :class:`~meshlib.Mesh` with a certificate from the embedded control plane's CA and
serves behind meshlib's inbound middleware. The tour applies Istio's own YAML, one file
at a time, and checks what each does to live traffic::

    meshlib demo            # the tour; exit status 0 only if every step showed its behaviour
    meshlib demo --fast     # the same, delays and timeouts x 0.4 (CI)
    meshlib demo --serve    # leave BookInfo running: productpage and dashboard URLs
"""

from typing import TYPE_CHECKING, Any

from ._cli import add_arguments, main, run
from ._platform import (
    DEFAULT_PORTS,
    WORKLOADS,
    istio_file,
    istio_files,
    platform_objects,
    write_platform,
)

if TYPE_CHECKING:
    from ._bookinfo import BookInfo, scale_durations
    from ._serve import serve
    from ._tour import STEPS, run_tour

# The apps and the tour import FastAPI, Flask and rich (the ``demo`` extra): loaded on
# first use, so ``meshlib --help`` does not need them.
_LAZY = {
    "BookInfo": "_bookinfo",
    "scale_durations": "_bookinfo",
    "serve": "_serve",
    "STEPS": "_tour",
    "run_tour": "_tour",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "DEFAULT_PORTS",
    "STEPS",
    "WORKLOADS",
    "BookInfo",
    "add_arguments",
    "istio_file",
    "istio_files",
    "main",
    "platform_objects",
    "run",
    "run_tour",
    "scale_durations",
    "serve",
    "write_platform",
]
