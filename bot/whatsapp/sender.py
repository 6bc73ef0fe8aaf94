"""Outbox notices on WhatsApp: free text inside the 24-hour window, an approved template outside.

`WhatsAppSender` is the `scheduler.sending.Sender` for `Channel.WHATSAPP`. For
each notice it chooses at send time (PRODUCT 5):

- the window is open (the recipient wrote to us less than 24 hours ago,
  `OutgoingNotice.last_inbound_at`) and the row is not `template_only`: the
  rendered `body` as free text, split at 4,096 characters, the parts
  `chunk_interval_s` apart (WhatsApp's pair rate limit);
- otherwise: the row's `template` as configured (bot/whatsapp/templates.py),
  its `params` in the configured order, in the recipient's language. A row
  without a configured template fails visibly: `Permanent("no template: <name>")`.
- a free-text send answered with 131047 (the window closed after all) is sent
  again as the template at once.

Graph API errors become outcomes for the dispatcher:

- 130429 (our number's throughput), 4 (the app's call limit):
  `RetryAfter(rate_limit_pause_s)`, the whole channel pauses;
- 131056 (the pair rate limit, this recipient): `Deferred(pair_retry_s)`, only
  this row waits, the channel goes on, no attempt is counted;
- 131026 (undeliverable): `Permanent`;
- HTTP 401, codes 0 and 190 (token rejected): `Transient`, a configuration
  error that a fixed token heals (as for Telegram);
- 5xx, `is_transient`, network errors, timeouts: `Transient` (back-off);
- any other 4xx: `Permanent("<code>: <message> (<details>)")`.

131056 is a `Deferred`, not a `RetryAfter`: Meta refuses the pair (our number,
that person), not our number, so pausing every other recipient would only
lose throughput. The dispatcher already keeps one message per
`whatsapp_chat_interval_s` per recipient; a 131056 means someone else (the
conversation's own replies) just wrote to them.

`send` never raises: pywa's and httpx's exceptions all become outcomes (but for
`PlaceMissed` within a send deadline: nothing was sent, bot/send_deadline.py).
`Sent.provider_message_id` is the `wamid` (of the last part, for a split text),
stored on the row for the status webhooks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Final

from pywa_async.errors import WhatsAppError
from pywa_async.types.templates import TemplateLanguage

from bot.whatsapp.client import WhatsAppClient
from bot.whatsapp.errors import classify_error, describe
from bot.whatsapp.render import MAX_TEXT
from bot.whatsapp.templates import MissingParameter, TemplateBook
from domain.vocabulary import Channel
from handlers.splitting import split_text
from scheduler.sending import (
    OutgoingNotice,
    Permanent,
    PlaceMissed,
    SendResult,
    Sent,
    Transient,
)

logger = logging.getLogger(__name__)

#: WhatsApp's customer-service window after the person's last message.
SERVICE_WINDOW: Final = timedelta(hours=24)
#: Free text to a person whose window closed.
WINDOW_CLOSED: Final = 131047


@dataclasses.dataclass(slots=True, frozen=True)
class _WindowClosed:
    """A free-text send refused with 131047: send the template instead."""

    error: str


class WhatsAppSender:
    """Delivers outbox notices through the WhatsApp Cloud API (a `scheduler.sending.Sender`)."""

    channel: Channel = Channel.WHATSAPP

    def __init__(
        self,
        client: WhatsAppClient,
        templates: TemplateBook,
        *,
        clock: Callable[[], datetime],
        window: timedelta = SERVICE_WINDOW,
        rate_limit_pause_s: float = 5.0,
        pair_retry_s: float = 6.0,
        chunk_interval_s: float = 6.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """`clock` returns aware UTC datetimes (the window is judged at send time).

        `rate_limit_pause_s`: how long the channel pauses after 130429 (Meta
        gives no retry time). `pair_retry_s`: how long a row waits after 131056
        (Meta's pair limit is one message per 6 s). `chunk_interval_s`: between
        the parts of a split text to one person (keep it at the dispatcher's
        `whatsapp_chat_interval_s`).
        """
        self._client = client
        self._templates = templates
        self._clock = clock
        self._window = window
        self._rate_limit_pause_s = rate_limit_pause_s
        self._pair_retry_s = pair_retry_s
        self._chunk_interval_s = chunk_interval_s
        self._sleep = sleep

    def window_open(self, notice: OutgoingNotice) -> bool:
        """True when free text may go to the recipient now (and the row allows it)."""
        if notice.template_only or notice.last_inbound_at is None:
            return False
        return self._clock() - notice.last_inbound_at < self._window

    def message_count(self, notice: OutgoingNotice) -> int:
        """How many messages `send(notice)` makes (the dispatcher takes a rate slot for each)."""
        if self.window_open(notice):
            return max(1, len(split_text(notice.body, MAX_TEXT)))
        return 1

    async def send(self, notice: OutgoingNotice) -> SendResult:
        """Deliver `notice` to the wa_id `notice.recipient`; never raises."""
        if not notice.recipient.isdigit():
            return Permanent("recipient is not a WhatsApp id")
        try:
            if self.window_open(notice) and notice.body.strip():
                result = await self._send_text(notice)
                if not isinstance(result, _WindowClosed):
                    return result
                logger.info("outbox %s: %s; sending the template", notice.outbox_id, result.error)
            return await self._send_template(notice)
        except PlaceMissed:
            raise  # nothing was written: the dispatcher takes a new place
        except Exception as exc:  # the contract: outcomes, never exceptions
            logger.error("outbox %s: unexpected %s", notice.outbox_id, type(exc).__name__)
            return Transient(f"unexpected {type(exc).__name__}")

    async def _send_text(self, notice: OutgoingNotice) -> SendResult | _WindowClosed:
        wamid: str | None = None
        for index, chunk in enumerate(split_text(notice.body, MAX_TEXT)):
            if index:
                await self._sleep(self._chunk_interval_s)
            try:
                sent = await self._client.wa.send_message(to=notice.recipient, text=chunk)
            except WhatsAppError as exc:
                if exc.code == WINDOW_CLOSED:
                    return _WindowClosed(describe(exc))
                return self._classified(exc)
            except Exception as exc:
                return self._classified(exc)
            wamid = sent.id
        return Sent(provider_message_id=wamid)

    async def _send_template(self, notice: OutgoingNotice) -> SendResult:
        template = self._templates.get(notice.template)
        if template is None:
            return Permanent(f"no template: {notice.template or notice.kind}")
        text = template.text_for(notice.recipient_language)
        try:
            components = template.components(notice.params, notice.recipient_language)
        except MissingParameter as exc:
            return Permanent(f"template {template.key}: parameter {exc.args[0]!r} missing")
        try:
            sent = await self._client.wa.send_template(
                to=notice.recipient,
                name=template.name,
                language=TemplateLanguage(text.code),
                params=components,
            )
        except Exception as exc:
            return self._classified(exc)
        return Sent(provider_message_id=sent.id)

    def _classified(self, exc: Exception) -> SendResult:
        return classify_error(
            exc, rate_limit_pause_s=self._rate_limit_pause_s, pair_retry_s=self._pair_retry_s
        )
