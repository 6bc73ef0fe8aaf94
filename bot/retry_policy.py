"""Which failures of an inbound update are worth retrying.

An update the engine failed on is retried only when the failure can heal by
itself: the database unreachable, locked or full, a connection dropped, the
platform's servers or the network away while a file was fetched. Any other
exception (a bug, data the code cannot handle) would fail the same way on every
try, and retrying it would hold the person's later messages (and, on Telegram's
polling, everybody in the batch) for nothing: such an update is parked at once
with its payload, and the person is told.

The WhatsApp failures that heal (Graph API 5xx, 429, pywa's transient errors,
httpx's transport errors) are added by `bot.whatsapp.errors.is_transient_update`,
so a Telegram-only process never loads pywa (~11 MB resident).
"""

from __future__ import annotations

import asyncio

from aiogram.exceptions import (
    ClientDecodeError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    OperationalError,  # unreachable, "database is locked", "database or disk is full", deadlock
    InterfaceError,  # the connection went away under us
    PoolTimeoutError,
    TimeoutError,
    asyncio.TimeoutError,
    OSError,  # connection refused, reset; ENOSPC outside the database
    TelegramNetworkError,
    TelegramServerError,
    TelegramRetryAfter,
    ClientDecodeError,  # an HTML error page from a proxy in front of the Bot API
)


def is_transient(exc: BaseException) -> bool:
    """True when trying the same update again later may succeed."""
    if isinstance(exc, _TRANSIENT_TYPES):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated
