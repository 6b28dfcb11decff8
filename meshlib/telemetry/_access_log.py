"""The outbound access log: one line per call in Envoy's default format, flags included.

Off unless asked for: the ``meshlib.access`` logger starts at WARNING, and
``logging.getLogger("meshlib.access").setLevel(logging.INFO)`` (with a handler, e.g.
``logging.basicConfig()``) turns it on; the data path pays one cached level check per
call. The line is Envoy's default
``[%START_TIME%] "%REQ(:METHOD)% %REQ(:PATH)% %PROTOCOL%" %RESPONSE_CODE%
%RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%
"%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%"
"%UPSTREAM_HOST%"``; what meshlib does not know (byte counts, upstream service time)
is ``-``, as Envoy writes an unset field.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._records import CallRecord

__all__ = ["ACCESS_LOG", "access_line", "log_call"]

#: The logger the access log writes to.
ACCESS_LOG = logging.getLogger("meshlib.access")
ACCESS_LOG.setLevel(logging.WARNING)  # opt-in, not on with the rest of meshlib's INFO
_PROTOCOL = {"http": "HTTP/1.1", "grpc": "HTTP/2"}


def access_line(record: CallRecord, start_wall: float) -> str:
    """The access-log line of one ended call (``start_wall``: its start, epoch seconds)."""
    call = record.call
    headers = call.headers

    def req(name: str) -> str:
        return headers.get(name) or "-"

    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start_wall))
    millis = int((start_wall % 1) * 1000)
    code = record.status if record.status is not None else 0
    return (
        f'[{stamp}.{millis:03d}Z] "{call.method} {call.path} '
        f'{_PROTOCOL.get(record.protocol, "-")}" {code} {record.flags or "-"} - - '
        f'{round(record.elapsed * 1000)} - "{req("x-forwarded-for")}" "{req("user-agent")}" '
        f'"{req("x-request-id")}" "{call.authority}" "{record.address or "-"}"'
    )


def log_call(record: CallRecord) -> None:
    """Write ``record``'s line when the access log is on."""
    if ACCESS_LOG.isEnabledFor(logging.INFO):
        start_wall = time.time() - record.elapsed
        ACCESS_LOG.info("%s", access_line(record, start_wall))
