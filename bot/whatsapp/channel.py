"""The WhatsApp channel assembled from its parts, for the composition root.

```
Meta ──POST──► WhatsAppWebhook (signature, journal row, 200) ──wake──► InboundProcessor
InboundProcessor ──► Engine.handle_queued ──► ReplyDelivery ──► WhatsAppReplies (pywa) ──► Graph API
outbox ──► Dispatcher ──► WhatsAppSender (free text in the 24-hour window, else template)
```

Everything talks to the Graph API through one pywa client on one httpx client
(`WHATSAPP_API_BASE`, so a BSP's proxy or the tests' fake can stand in).
"""

from __future__ import annotations

import asyncio
import dataclasses

from aiohttp import web

from bot.app import Runtime, StartupError
from bot.delivery import DeliverySettings, ReplyDelivery
from bot.whatsapp.client import WhatsAppClient, build_client
from bot.whatsapp.processor import InboundProcessor, ProcessorSettings
from bot.whatsapp.render import WhatsAppReplies
from bot.whatsapp.sender import WhatsAppSender
from bot.whatsapp.templates import TemplateConfigError, load_templates
from bot.whatsapp.webhook import WhatsAppWebhook
from sertakan_data import WHATSAPP_TEMPLATES
from storage.dead_letters import DeadLetters


@dataclasses.dataclass(slots=True)
class WhatsAppChannel:
    client: WhatsAppClient
    sender: WhatsAppSender
    webhook: WhatsAppWebhook
    processor: InboundProcessor
    replies: ReplyDelivery

    def routes(self, app: web.Application) -> None:
        self.webhook.routes(app)

    async def run(self, stop: asyncio.Event) -> None:
        """Feed the journal to the engine until `stop` (the webhook wakes it on new rows),
        and send the replies the reply queue holds for nobody (refused earlier, or left
        by a process that stopped)."""
        await asyncio.gather(self.processor.run(stop), self.replies.run(stop))

    async def close(self) -> None:
        await self.replies.close()
        await self.client.close()


@dataclasses.dataclass(slots=True, frozen=True)
class _Media:
    """The processor's `MediaFetcher` over the client's download."""

    client: WhatsAppClient

    async def fetch(self, media_id: str, max_bytes: int) -> bytes | None:
        return await self.client.fetch_media(media_id, max_bytes)


def build_whatsapp(runtime: Runtime) -> WhatsAppChannel:
    """The channel for `runtime.settings.whatsapp`; StartupError names what is missing."""
    settings = runtime.settings.whatsapp
    if settings.app_secret is None or settings.verify_token is None:
        raise StartupError(
            "WhatsApp needs WHATSAPP_APP_SECRET (to check X-Hub-Signature-256 on every "
            "webhook) and WHATSAPP_VERIFY_TOKEN (for Meta's verification handshake)"
        )
    try:
        templates = load_templates(
            runtime.settings.data_file(WHATSAPP_TEMPLATES, settings.templates_file)
        )
    except TemplateConfigError as exc:
        raise StartupError(f"WHATSAPP_TEMPLATES_FILE: {exc}") from exc
    client = build_client(settings)
    dispatch = runtime.settings.dispatch
    sender = WhatsAppSender(
        client,
        templates,
        clock=runtime.clock,
        # The parts of a long text to one person keep the dispatcher's spacing.
        chunk_interval_s=dispatch.whatsapp_chat_interval_s,
        pair_retry_s=dispatch.whatsapp_chat_interval_s,
    )
    replies = ReplyDelivery(
        WhatsAppReplies(client, runtime.catalogs, pair_retry_s=dispatch.whatsapp_chat_interval_s),
        database=runtime.db,
        cipher=runtime.cipher,
        clock=runtime.clock,
        settings=DeliverySettings.from_settings(runtime.settings.reply),
        budget=runtime.send_budget,
    )
    processor = InboundProcessor(
        database=runtime.db,
        engine=runtime.engine,
        cipher=runtime.cipher,
        replies=replies,
        media=_Media(client),
        parking=DeadLetters(runtime.sessionmaker, runtime.cipher),
        catalogs=runtime.catalogs,
        clock=runtime.clock,
        settings=ProcessorSettings.from_settings(settings),
    )
    webhook = WhatsAppWebhook(
        settings, runtime.db, runtime.cipher, runtime.clock, wake=processor.wake
    )
    return WhatsAppChannel(client, sender, webhook, processor, replies)
