"""Range-checked ``argparse`` types for the ``meshlib`` command line.

Each is a ``type=`` callable: a bad value becomes argparse's own usage error naming the
flag (``argument --port: 99999 is not a port (0-65535)``), exit status 2.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import math
import os
from collections.abc import Callable

__all__ = [
    "MAX_CERT_TTL",
    "existing_dir",
    "existing_file",
    "existing_path",
    "host_port",
    "ip_address",
    "log_level",
    "number",
    "port",
]

#: istiod's default MAX_WORKLOAD_CERT_TTL: 90 days.
MAX_CERT_TTL = 90 * 86400.0


def port(text: str) -> int:
    """A TCP port, 0 (pick one) to 65535."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (0-65535)")
    return value


def number(
    low: float,
    high: float,
    *,
    low_inclusive: bool = True,
    unit: str = "",
    integer: bool = False,
) -> Callable[[str], float]:
    """A finite number in ``[low, high]`` (``(low, high]`` if not ``low_inclusive``)."""
    lower = "[" if low_inclusive else "("
    span = f"{lower}{low:g}, {high:g}]{' ' + unit if unit else ''}"

    def parse(text: str) -> float:
        try:
            value = float(int(text, 10)) if integer else float(text)
        except ValueError:
            kind = "an integer" if integer else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind}") from None
        too_low = value < low or (value == low and not low_inclusive)
        if not math.isfinite(value) or too_low or value > high:
            raise argparse.ArgumentTypeError(f"{text} is out of range {span}")
        return value

    parse.__name__ = "number"  # argparse names the type in some messages
    return parse


def host_port(text: str) -> str:
    """``host:port`` (``[v6]:port``), or a ``unix:`` target, as a gRPC target."""
    if text.startswith(("unix:", "unix-abstract:", "dns:", "ipv4:", "ipv6:")):
        return text
    host, sep, raw_port = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"{text!r} is not host:port")
    try:
        port(raw_port)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    return text


def ip_address(text: str) -> str:
    """An IPv4 or IPv6 address."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address") from None


def existing_path(text: str) -> str:
    """A file or directory that exists."""
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"{text}: no such file or directory")
    return text


def existing_dir(text: str) -> str:
    """A directory that exists."""
    if not os.path.isdir(text):
        what = "is not a directory" if os.path.exists(text) else "no such directory"
        raise argparse.ArgumentTypeError(f"{text}: {what}")
    return text


def existing_file(text: str) -> str:
    """A regular file that exists."""
    if not os.path.isfile(text):
        what = "is not a file" if os.path.exists(text) else "no such file"
        raise argparse.ArgumentTypeError(f"{text}: {what}")
    return text


def log_level(text: str) -> str:
    """A ``logging`` level name (DEBUG, INFO, WARNING, ERROR, CRITICAL)."""
    name = text.upper()
    if not isinstance(logging.getLevelName(name), int):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a level (DEBUG, INFO, WARNING, ERROR, CRITICAL)"
        )
    return name
