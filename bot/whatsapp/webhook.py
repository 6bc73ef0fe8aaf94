"""The WhatsApp webhook: Meta's GET handshake and signed POSTs, journalled before the 200.

POST handling, in order, each refusal without side effects:

1. 413 when the body is larger than `WHATSAPP_MAX_BODY_BYTES`: at once for a
   declared Content-Length, and for a chunked body as soon as the bytes read
   pass the limit (nothing beyond it is read into memory; aiohttp discards
   the rest while the client reads the answer);
2. 401 without an `X-Hub-Signature-256` header, 403 when it is not the
   HMAC-SHA256 of the raw body with the app secret (compared in constant
   time); both log a warning that names the peer, never the body;
3. 400 when the body is not JSON, or not a webhook envelope;
4. one transaction: record the messages in the journal (deduplicated by
   their WhatsApp message id) and apply the statuses to the outbox; 200 once
   it committed, 500 when it failed (Meta retries). Then the processor is
   woken; it hands the messages to the engine, so Meta never waits for a
   conversation step, and a crash after the 200 loses nothing.

Changes of other fields (account updates, template reviews), reactions and
statuses of messages we do not know are answered 200 and otherwise ignored;
so are changes for another phone number than `WHATSAPP_PHONE_NUMBER_ID` (one
WhatsApp Business Account may hold several numbers) and messages sent longer
than `WHATSAPP_MAX_MESSAGE_AGE_S` ago (a signed body replayed later is not a
new message; a warning names their ids). Statuses are applied at any age:
they only ever move an outbox row forwards.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.settings import WhatsAppSettings
from bot.whatsapp.events import PayloadError, WebhookBatch, parse_webhook
from storage.crypto import NikCipher
from storage.whatsapp_inbound import apply_status, record

logger = logging.getLogger(__name__)

SIGNATURE_HEADER: Final = "X-Hub-Signature-256"
_SIGNATURE_PREFIX: Final = "sha256="
_READ_CHUNK: Final = 64 * 1024

Clock = Callable[[], datetime]


class WhatsAppWebhook:
    """Serves `settings.webhook_path`: GET for Meta's verification, POST for updates."""

    def __init__(
        self,
        settings: WhatsAppSettings,
        database: AsyncEngine,
        cipher: NikCipher,
        clock: Clock,
        *,
        wake: Callable[[], None] | None = None,
    ) -> None:
        """`wake` is called after a commit that recorded new messages (`InboundProcessor.wake`).

        Raises ValueError when the app secret or the verify token is not set.
        """
        if settings.app_secret is None or settings.verify_token is None:
            raise ValueError("WHATSAPP_APP_SECRET and WHATSAPP_VERIFY_TOKEN are required")
        self._settings = settings
        self._secret = settings.app_secret.get_secret_value().encode()
        self._verify_token = settings.verify_token.get_secret_value().encode()
        self._database = database
        self._cipher = cipher
        self._clock = clock
        self._wake = wake

    def routes(self, app: web.Application) -> None:
        """Register GET and POST `settings.webhook_path` on `app`."""
        app.router.add_get(self._settings.webhook_path, self._on_verify)
        app.router.add_post(self._settings.webhook_path, self._on_update)

    # --- GET: the subscription handshake ---------------------------------------------

    async def _on_verify(self, request: web.Request) -> web.Response:
        """Echo `hub.challenge` when `hub.mode` is subscribe and `hub.verify_token` matches."""
        query = request.query
        token = query.get("hub.verify_token", "").encode(errors="replace")
        challenge = query.get("hub.challenge")
        if (
            query.get("hub.mode") != "subscribe"
            or challenge is None
            or not hmac.compare_digest(token, self._verify_token)
        ):
            logger.warning("whatsapp verification refused from %s", request.remote)
            return web.Response(status=403)
        logger.info("whatsapp webhook verified")
        return web.Response(text=challenge)

    # --- POST: updates ------------------------------------------------------------------

    async def _on_update(self, request: web.Request) -> web.Response:
        limit = self._settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            logger.warning("whatsapp webhook refused from %s: body over the limit", request.remote)
            return _closing(web.Response(status=413))
        signature = request.headers.get(SIGNATURE_HEADER)
        if signature is None:
            logger.warning("whatsapp webhook refused from %s: no signature", request.remote)
            return _closing(web.Response(status=401))
        body = await _read_limited(request, limit)
        if body is None:
            logger.warning("whatsapp webhook refused from %s: body over the limit", request.remote)
            return _closing(web.Response(status=413))
        if not self._signed(body, signature):
            logger.warning("whatsapp webhook refused from %s: bad signature", request.remote)
            return web.Response(status=403)
        max_age = timedelta(seconds=self._settings.max_message_age_s)
        try:
            batch = parse_webhook(
                json.loads(body),
                phone_number_id=self._settings.phone_number_id or None,
                not_before=self._clock() - max_age,
            )
        except (ValueError, RecursionError) as exc:  # JSONDecodeError and PayloadError too
            reason = "not a webhook envelope" if isinstance(exc, PayloadError) else "not JSON"
            logger.warning("whatsapp webhook refused: body is %s", reason)
            return web.Response(status=400)
        if batch.foreign:
            logger.warning(
                "whatsapp webhook: %s change(s) for another phone number ignored", batch.foreign
            )
        if batch.too_old:
            # Ids only: they name no person and say nothing of the content.
            logger.warning(
                "whatsapp webhook: %s message(s) older than %s dropped: %s",
                len(batch.too_old),
                max_age,
                ", ".join(batch.too_old),
            )
        try:
            recorded = await self._store(batch)
        except Exception as exc:
            logger.error(
                "whatsapp webhook: %s messages / %s statuses not stored: %s",
                len(batch.messages),
                len(batch.statuses),
                type(exc).__name__,
            )
            return web.Response(status=500)
        if recorded and self._wake is not None:
            self._wake()
        return web.Response(status=200)

    def _signed(self, body: bytes, signature: str) -> bool:
        expected = _SIGNATURE_PREFIX + hmac.new(self._secret, body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected.encode(), signature.strip().encode(errors="replace"))

    async def _store(self, batch: WebhookBatch) -> int:
        """Record the messages and apply the statuses in one transaction; new messages recorded."""
        if not batch.messages and not batch.statuses:
            return 0
        now = self._clock()
        # Closed explicitly: `async with engine.connect()` closes in a task of its own.
        connection = await self._database.connect()
        try:
            async with connection.begin():
                recorded = await record(connection, batch.messages, cipher=self._cipher, now=now)
                for status in batch.statuses:
                    outcome = await apply_status(
                        connection,
                        status.message_id,
                        status.status,
                        status.at,
                        status.error_code,
                        now=now,
                        error_title=status.error_title,
                    )
                    if outcome != "updated":
                        logger.debug(
                            "status %s of %s: %s", status.status, status.message_id, outcome
                        )
        finally:
            await connection.close()
        duplicates = len(batch.messages) - len(recorded)
        if duplicates:
            logger.info("whatsapp webhook: %s message(s) already recorded", duplicates)
        return len(recorded)


async def _read_limited(request: web.Request, limit: int) -> bytes | None:
    """The raw body, or None as soon as more than `limit` bytes arrived."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(_READ_CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)


def _closing(response: web.Response) -> web.Response:
    """The connection is not kept for another request after this refusal."""
    response.force_close()
    return response
