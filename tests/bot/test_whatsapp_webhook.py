"""The WhatsApp webhook over real HTTP on 127.0.0.1, with the real journal on the test database."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.settings import WhatsAppSettings
from bot.whatsapp.events import to_event
from bot.whatsapp.webhook import SIGNATURE_HEADER, WhatsAppWebhook
from domain.vocabulary import Channel, DeliveryStatus, OutboxStatus
from handlers.types import EventKind, InboundEvent
from storage.crypto import NikCipher
from storage.db import create_engine
from storage.models import Outbox, WhatsappInbound
from storage.outbox import Notice, enqueue
from tests.fakes import whatsapp_payloads as wa
from tests.fakes.chat import TEST_KEY, WORKER_NIK
from tests.fakes.clock import FrozenClock
from tests.fakes.whatsapp_payloads import APP_SECRET, SITI, VERIFY_TOKEN

PATH = "/whatsapp/webhook"
CIPHER = NikCipher(TEST_KEY)
Client = TestClient[web.Request, web.Application]


def settings(**overrides: Any) -> WhatsAppSettings:
    values: dict[str, Any] = {
        "app_secret": SecretStr(APP_SECRET),
        "verify_token": SecretStr(VERIFY_TOKEN),
        "phone_number_id": wa.PHONE_NUMBER_ID,
        "access_token": SecretStr("token"),
    }
    values.update(overrides)
    return WhatsAppSettings(**values)


class Wakes:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


@contextlib.asynccontextmanager
async def serve(database: AsyncEngine, wakes: Wakes | None = None) -> AsyncIterator[Client]:
    app = web.Application()
    WhatsAppWebhook(settings(), database, CIPHER, FrozenClock(), wake=wakes).routes(app)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


async def post(
    client: Client, body: bytes, *, signature: str | None = "sign", **kwargs: Any
) -> int:
    headers = {"Content-Type": "application/json"}
    if signature == "sign":
        headers[SIGNATURE_HEADER] = wa.sign(body)
    elif signature is not None:
        headers[SIGNATURE_HEADER] = signature
    response = await client.post(PATH, data=body, headers=headers, **kwargs)
    await response.release()
    return response.status


async def journal(database: AsyncEngine) -> list[Any]:
    async with database.connect() as connection:
        return list(
            (await connection.execute(select(WhatsappInbound).order_by(WhatsappInbound.id))).all()
        )


def event_of(row: Any) -> InboundEvent | None:
    payload = CIPHER.decrypt_payload(row.payload_ciphertext)
    return to_event(row.message_id, payload, received_at=row.received_at)


# --- GET: the verification handshake --------------------------------------------------


async def test_the_handshake_echoes_the_challenge_for_the_right_token(
    db_engine: AsyncEngine,
) -> None:
    async with serve(db_engine) as client:
        params = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "829"}
        response = await client.get(PATH, params=params)
        assert (response.status, await response.text()) == (200, "829")


@pytest.mark.parametrize(
    "params",
    [
        {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1"},
        {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1"},
        {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN},
        {},
    ],
    ids=["wrong token", "wrong mode", "no challenge", "nothing"],
)
async def test_the_handshake_is_refused_otherwise(
    db_engine: AsyncEngine, params: dict[str, str]
) -> None:
    async with serve(db_engine) as client:
        response = await client.get(PATH, params=params)
        assert response.status == 403
        assert await response.text() != "1"


def test_the_webhook_needs_the_app_secret_and_the_verify_token(db_engine: AsyncEngine) -> None:
    for missing in ("app_secret", "verify_token"):
        with pytest.raises(ValueError):
            WhatsAppWebhook(settings(**{missing: None}), db_engine, CIPHER, FrozenClock())


# --- POST: accepted ----------------------------------------------------------------


async def test_a_signed_message_is_journalled_before_the_200_and_wakes_the_processor(
    db_engine: AsyncEngine,
) -> None:
    wakes = Wakes()
    incoming = wa.text(SITI, "Terima kasih \N{PERSON WITH FOLDED HANDS}")
    async with serve(db_engine, wakes) as client:
        assert await post(client, wa.encode(wa.webhook(incoming))) == 200
    [row] = await journal(db_engine)
    assert (row.message_id, row.sender_id, row.processed_at) == (incoming.id, "6281234567890", None)
    event = event_of(row)
    assert event is not None and event.text == "Terima kasih \N{PERSON WITH FOLDED HANDS}"
    assert wakes.count == 1


async def test_the_same_message_posted_twice_at_once_is_one_row(db_engine: AsyncEngine) -> None:
    """Meta may deliver one message twice, concurrently: both answered 200, one journal row."""
    wakes = Wakes()
    body = wa.encode(wa.webhook(wa.text(SITI, "halo")))
    async with serve(db_engine, wakes) as client:
        statuses = await asyncio.gather(*(post(client, body) for _ in range(6)))
        assert statuses == [200] * 6
        assert await post(client, body) == 200  # and a redelivery days later
    assert len(await journal(db_engine)) == 1
    assert wakes.count == 1


@pytest.mark.parametrize(
    "incoming",
    [wa.sticker(SITI), wa.location(SITI), wa.unknown(SITI, "poll")],
    ids=["sticker", "location", "unknown type"],
)
async def test_a_message_the_bot_cannot_read_is_journalled_as_unsupported(
    db_engine: AsyncEngine, incoming: wa.Incoming
) -> None:
    async with serve(db_engine) as client:
        assert await post(client, wa.encode(wa.webhook(incoming))) == 200
    [row] = await journal(db_engine)
    event = event_of(row)
    assert event is not None and event.kind is EventKind.UNSUPPORTED


async def test_a_reaction_is_answered_and_not_journalled(db_engine: AsyncEngine) -> None:
    wakes = Wakes()
    async with serve(db_engine, wakes) as client:
        body = wa.encode(wa.webhook(wa.reaction(SITI, wa.message_id())))
        assert await post(client, body) == 200
    assert await journal(db_engine) == []
    assert wakes.count == 0


async def test_an_old_questions_button_is_journalled_with_its_id_for_the_engine(
    db_engine: AsyncEngine,
) -> None:
    async with serve(db_engine) as client:
        body = wa.encode(wa.webhook(wa.button_reply(SITI, "2:confirm", "Konfirmasi")))
        assert await post(client, body) == 200
    [row] = await journal(db_engine)
    event = event_of(row)
    assert event is not None and (event.kind, event.choice_id) == (EventKind.CHOICE, "2:confirm")


async def test_text_in_place_of_a_button_is_journalled_as_text(db_engine: AsyncEngine) -> None:
    async with serve(db_engine) as client:
        assert await post(client, wa.encode(wa.webhook(wa.text(SITI, "konfirmasi")))) == 200
    [row] = await journal(db_engine)
    event = event_of(row)
    assert event is not None and (event.kind, event.text) == (EventKind.TEXT, "konfirmasi")


async def test_another_field_is_answered_and_ignored(db_engine: AsyncEngine) -> None:
    wakes = Wakes()
    async with serve(db_engine, wakes) as client:
        assert await post(client, wa.encode(wa.account_update())) == 200
    assert await journal(db_engine) == []
    assert wakes.count == 0


def _for_number(document: dict[str, Any], phone_number_id: str) -> dict[str, Any]:
    """`document` as Meta posts it for another number of the same business account."""
    for entry in document["entry"]:
        for change in entry["changes"]:
            change["value"]["metadata"]["phone_number_id"] = phone_number_id
    return document


async def test_a_change_for_another_phone_number_is_answered_and_not_journalled(
    db_engine: AsyncEngine,
) -> None:
    """Messages and statuses of another number of our business account are not ours."""
    async with db_engine.begin() as connection:
        await enqueue(
            connection,
            Notice("card_ready:1", Channel.WHATSAPP, SITI.sender_id, "card_ready", "Kartu siap"),
            now=FrozenClock()(),
        )
        await connection.execute(
            update(Outbox).values(status=OutboxStatus.SENT, provider_message_id="wamid.ours")
        )
    wakes = Wakes()
    theirs = _for_number(
        wa.webhook(wa.text(SITI, "halo"), statuses=[wa.status("wamid.ours", "read")]),
        "109999999999999",
    )
    ours = wa.text(SITI, "halo juga")
    mixed = wa.webhook(ours)
    mixed["entry"].append(_for_number(wa.webhook(wa.text(SITI, "bukan kami")), "1")["entry"][0])
    async with serve(db_engine, wakes) as client:
        assert await post(client, wa.encode(theirs)) == 200
        assert await journal(db_engine) == []
        assert await post(client, wa.encode(mixed)) == 200
    assert [row.message_id for row in await journal(db_engine)] == [ours.id]
    assert wakes.count == 1
    async with db_engine.connect() as connection:
        assert await connection.scalar(select(Outbox.delivery_status)) is None


async def test_a_message_older_than_the_maximum_age_is_answered_and_dropped(
    db_engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """A signed body replayed a day later is not a new message (WHATSAPP_MAX_MESSAGE_AGE_S)."""
    now = FrozenClock()()
    stale = wa.text(SITI, f"NIK saya {WORKER_NIK}", at=now - timedelta(hours=24, seconds=1))
    recent = wa.text(SITI, "halo", at=now - timedelta(hours=23))
    wakes = Wakes()
    with caplog.at_level(logging.INFO):
        async with serve(db_engine, wakes) as client:
            assert await post(client, wa.encode(wa.webhook(stale))) == 200
            assert await journal(db_engine) == []
            assert await post(client, wa.encode(wa.webhook(stale, recent))) == 200
    assert [row.message_id for row in await journal(db_engine)] == [recent.id]
    assert wakes.count == 1
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == 2 and all(stale.id in line for line in dropped)
    assert WORKER_NIK not in caplog.text


async def test_statuses_update_the_outbox_and_unknown_ones_are_answered(
    db_engine: AsyncEngine,
) -> None:
    async with db_engine.begin() as connection:
        await enqueue(
            connection,
            Notice("card_ready:1", Channel.WHATSAPP, SITI.sender_id, "card_ready", "Kartu siap"),
            now=FrozenClock()(),
        )
        await connection.execute(
            update(Outbox).values(status=OutboxStatus.SENT, provider_message_id="wamid.ours")
        )
    body = wa.encode(
        wa.webhook(
            statuses=[
                wa.status("wamid.ours", "read"),
                wa.status("wamid.ours", "delivered"),  # late: never moves it back
                wa.status("wamid.not-ours", "failed", error_code=131026),
            ]
        )
    )
    async with serve(db_engine) as client:
        assert await post(client, body) == 200
    async with db_engine.connect() as connection:
        status = await connection.scalar(select(Outbox.delivery_status))
    assert status is DeliveryStatus.READ


# --- POST: refused, without side effects ---------------------------------------------


@pytest.mark.parametrize(
    ("signature", "expected"),
    [
        (None, 401),
        ("", 403),
        ("sha256=" + "0" * 64, 403),
        (wa.sign(b"another body"), 403),
        (wa.sign(b"x", secret="another secret").replace("sha256=", "sha1="), 403),
        ("sha256=\N{LATIN SMALL LETTER E WITH ACUTE}", 403),
    ],
    ids=["missing", "empty", "zeros", "other body", "other secret", "non-ascii"],
)
async def test_an_unsigned_or_wrongly_signed_post_is_refused_without_side_effects(
    db_engine: AsyncEngine,
    caplog: pytest.LogCaptureFixture,
    signature: str | None,
    expected: int,
) -> None:
    wakes = Wakes()
    body = wa.encode(wa.webhook(wa.text(SITI, f"NIK saya {WORKER_NIK}")))
    with caplog.at_level(logging.INFO):
        async with serve(db_engine, wakes) as client:
            assert await post(client, body, signature=signature) == expected
    assert await journal(db_engine) == []
    assert wakes.count == 0
    assert any(
        record.levelno == logging.WARNING and "signature" in record.getMessage()
        for record in caplog.records
    )
    assert WORKER_NIK not in caplog.text


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'"text"',
        b'{"object":"whatsapp_business_account","entry":3}',
    ],
    ids=["broken json", "not utf-8", "a list", "a string", "entry not a list"],
)
async def test_a_signed_body_that_is_not_a_webhook_is_refused(
    db_engine: AsyncEngine, body: bytes
) -> None:
    async with serve(db_engine) as client:
        assert await post(client, body) == 400
    assert await journal(db_engine) == []


async def test_a_5_mb_body_is_refused_before_it_is_read(db_engine: AsyncEngine) -> None:
    padding = "x" * (5 * 1024 * 1024)
    body = wa.encode(wa.webhook(wa.text(SITI, padding)))
    async with serve(db_engine) as client:
        assert await post(client, body) == 413
        assert await post(client, body, signature=None) == 413  # the size is checked first
    assert await journal(db_engine) == []


async def test_a_5_mb_chunked_body_is_refused_once_the_limit_is_passed(
    db_engine: AsyncEngine,
) -> None:
    """No Content-Length: the body is read only up to the limit, then refused."""
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        prefix = b'{"object":"whatsapp_business_account","entry":[],"padding":"'
        yield prefix
        for _ in range(80):
            sent += 64 * 1024
            yield b"x" * (64 * 1024)
        yield b'"}'

    async with serve(db_engine) as client:
        response = await client.post(
            PATH,
            data=chunks(),
            headers={SIGNATURE_HEADER: wa.sign(b"unknown"), "Content-Type": "application/json"},
        )
        assert response.status == 413
        assert response.headers.get("Content-Length") == "0"
    assert sent >= 1024 * 1024
    assert await journal(db_engine) == []


async def test_a_journal_that_cannot_be_written_answers_500_so_meta_retries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    unmigrated = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'empty.sqlite3'}")
    wakes = Wakes()
    try:
        async with serve(unmigrated, wakes) as client:
            body = wa.encode(wa.webhook(wa.text(SITI, f"NIK {WORKER_NIK}")))
            assert await post(client, body) == 500
    finally:
        await unmigrated.dispose()
    assert wakes.count == 0
    assert WORKER_NIK not in caplog.text


async def test_the_signature_covers_the_exact_bytes(db_engine: AsyncEngine) -> None:
    """Re-serialised JSON (other spacing) no longer matches the signature of the original."""
    document = wa.webhook(wa.text(SITI, "halo"))
    signed = wa.encode(document)
    respaced = json.dumps(document, indent=1).encode()
    async with serve(db_engine) as client:
        assert await post(client, respaced, signature=wa.sign(signed)) == 403
        assert await post(client, respaced) == 200
