"""The subcommand registry of the ``meshlib`` command line (no imports of its own, so
any module can register a subcommand without importing :mod:`meshlib.cli`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["COMMANDS", "Handler", "Setup", "command"]

Handler = Callable[[argparse.Namespace], int]
Setup = Callable[[argparse.ArgumentParser], Handler]
#: name -> (help text, the function that fills its parser and returns its handler)
COMMANDS: dict[str, tuple[str, Setup]] = {}


def command(name: str, help: str) -> Callable[[Setup], Setup]:
    """Register a subcommand: the decorated function configures its parser."""

    def register(setup: Setup) -> Setup:
        COMMANDS[name] = (help, setup)
        return setup

    return register
