"""Log records that say which request and update they belong to, and never a NIK, phone or token.

`bound(update_id=..., request_id=...)` sets context variables for the code it
wraps (an HTTP request, one update's engine step); `ContextFilter` copies them
onto every record, so with SERTAKAN_LOG_FORMAT=json each line carries
`request_id` and `update_id` without any call site passing them.

`Redactor` is the last guard, on every handler whatever the format: the code
logs ids, counts and exception types, never message contents, but a third
party's message (a library's exception text, a URL with the bot token in its
path) could still carry one. It masks 16-digit runs (a NIK), Indonesian phone
numbers (08..., 628..., +62...) and Telegram bot tokens in the rendered message
and in exception text. Update ids (at most 10 digits on Telegram, `wamid.` on
WhatsApp) are left alone.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter

#: Taken from the proxy (nginx sets it) so one request has one id end to end.
REQUEST_ID_HEADER = "X-Request-Id"

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
update_id: ContextVar[str | None] = ContextVar("update_id", default=None)


@contextlib.contextmanager
def bound(*, request_id: str | None = None, update_id: str | None = None) -> Iterator[None]:
    """Within the block (and tasks it starts), records carry these ids; None leaves one as is."""
    tokens = []
    if request_id is not None:
        tokens.append((_REQUEST, _REQUEST.set(request_id)))
    if update_id is not None:
        tokens.append((_UPDATE, _UPDATE.set(update_id)))
    try:
        yield
    finally:
        for variable, token in reversed(tokens):
            variable.reset(token)


_REQUEST = request_id
_UPDATE = update_id


class ContextFilter(logging.Filter):
    """Adds `request_id` and `update_id` (None outside a request or update) to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        # An id given by the call (`extra=`, as the access log does) is kept.
        if getattr(record, "request_id", None) is None:
            record.request_id = _REQUEST.get()
        if getattr(record, "update_id", None) is None:
            record.update_id = _UPDATE.get()
        return True


_SECRETS = re.compile(
    r"\d{6,12}:[A-Za-z0-9_-]{30,}"  # Telegram bot token
    r"|(?<!\d)\d{16}(?!\d)"  # NIK
    r"|(?<![\w+])(?:\+62[ -]?|62|0)8[\d -]{7,14}\d(?!\d)"  # Indonesian mobile number
)
MASK = "[redacted]"


def redact(message: str) -> str:
    """`message` with NIKs, Indonesian phone numbers and bot tokens masked."""
    return _SECRETS.sub(MASK, message)


class Redactor(logging.Filter):
    """Masks NIKs, phone numbers and tokens in the record's message and exception text."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[0] is not None:
            # Rendered once here, masked, and kept: the formatter reuses `exc_text`.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def json_formatter() -> logging.Formatter:
    """One JSON object per line: time, level, logger, process (pid), message, request_id,
    update_id, and exc_info when there is one."""
    return JsonFormatter(
        "{asctime}{levelname}{name}{process}{message}{request_id}{update_id}",
        style="{",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        timestamp=False,
    )


def prepare(handler: logging.Handler, *, json: bool) -> logging.Handler:
    """`handler` with the context and redaction filters and the text or JSON format."""
    handler.addFilter(ContextFilter())
    handler.addFilter(Redactor())
    handler.setFormatter(json_formatter() if json else logging.Formatter(TEXT_FORMAT))
    return handler
