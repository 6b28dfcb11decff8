"""The transport-neutral exchange core every client adapter drives (see
:mod:`meshlib.exchange._core`)."""

from ._core import (
    DONE,
    MAX_SHADOWS_IN_FLIGHT,
    Action,
    Done,
    ExchangeCore,
    Send,
    ShadowSlots,
    Sleep,
    open_exchange,
)

__all__ = [
    "DONE",
    "MAX_SHADOWS_IN_FLIGHT",
    "Action",
    "Done",
    "ExchangeCore",
    "Send",
    "ShadowSlots",
    "Sleep",
    "open_exchange",
]
