"""The per-event hot path (storage.conversation_store): a new person's rows, the reply
queue's order, and what a new person's first event does not look up."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from domain.vocabulary import Channel, Language
from storage.audit import Actor
from storage.conversation_store import conversation_store
from storage.models import ChannelAccount, Conversation, Opd, Pic
from storage.roles import appoint
from tests.fakes.chat import Chat, build_engine, seed_opds
from tests.fakes.clock import FrozenClock
from tests.fakes.workbench import appoint_pic


async def test_a_new_person_gets_both_rows_and_the_record_says_it_was_created(
    db_engine: AsyncEngine,
) -> None:
    now = FrozenClock()()
    async with db_engine.begin() as connection:
        store = await conversation_store(connection)
        first = await store.open(
            Channel.TELEGRAM, "4242", language=Language.ENGLISH, display_name="Budi", now=now
        )
    assert first.created
    assert (first.language, first.updated_at) == (Language.ENGLISH, now)
    assert (first.state.flow, first.state.step, first.state.draft) == (None, None, None)
    assert (first.state.data, first.state.history, first.state.version) == ({}, [], 0)
    async with db_engine.begin() as connection:
        store = await conversation_store(connection)
        again = await store.open(
            Channel.TELEGRAM, "4242", language=Language.INDONESIAN, display_name=None, now=now
        )
        account = (await connection.execute(select(ChannelAccount))).one()
        conversation = (await connection.execute(select(Conversation))).one()
    # What the creating event worked with is what the database holds.
    assert again == type(first)(**{**_fields(first), "created": False})
    assert (account.id, account.channel, account.external_id) == (
        first.account_id,
        Channel.TELEGRAM,
        "4242",
    )
    assert (account.language, account.display_name) == (Language.ENGLISH, "Budi")
    assert (conversation.id, conversation.channel_account_id) == (
        first.conversation_id,
        first.account_id,
    )


def _fields(record: Any) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__dataclass_fields__}


async def test_an_account_made_before_its_first_event_gets_its_conversation_and_its_role(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """Appointing a PIC by Telegram id creates the account; its first event is not a
    "created" one, so the PIC look-up runs and the menu offers the PIC's entry."""
    clock = FrozenClock()
    await seed_opds(sessionmaker, clock)
    await appoint_pic(sessionmaker, clock, telegram_id="2002", opd_code="BKL-DINKES")
    async with sessionmaker.kw["bind"].begin() as connection:
        record = await (await conversation_store(connection)).open(
            Channel.TELEGRAM, "2002", language=Language.INDONESIAN, display_name=None, now=clock()
        )
    assert not record.created
    await appoint_pic(sessionmaker, clock, telegram_id="2003", opd_code="BKL-DINKES")
    pic = Chat(build_engine(sessionmaker, clock), clock, sender="2003")
    await pic.say("/start")
    assert any("Dinas Kesehatan" in label for label in pic.labels()), pic.labels()


async def test_a_new_whatsapp_account_still_claims_the_appointment_for_its_phone(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    clock = FrozenClock()
    await seed_opds(sessionmaker, clock)
    async with sessionmaker.kw["bind"].begin() as connection:
        opd_id = (
            await connection.execute(select(Opd.id).where(Opd.code == "BKL-DINKES"))
        ).scalar_one()
        pic_id = await appoint(
            connection,
            opd_id=opd_id,
            channel=None,
            external_id=None,
            phone_e164="+6281311112222",
            actor=Actor.admin("test-admin"),
            now=clock(),
        )
    chat = Chat(
        build_engine(sessionmaker, clock, worker_channel=Channel.WHATSAPP),
        clock,
        sender="6281311112222",
        channel=Channel.WHATSAPP,
        sender_phone="+6281311112222",
    )
    await chat.say("menu")
    async with sessionmaker.kw["bind"].connect() as connection:
        bound = (
            await connection.execute(
                select(Pic.channel_account_id, ChannelAccount.id)
                .join(ChannelAccount, ChannelAccount.external_id == "6281311112222")
                .where(Pic.id == pic_id)
            )
        ).one()
    assert bound[0] == bound[1]  # bound to the account its first event created
    assert any("Dinas Kesehatan" in label for label in chat.labels()), chat.labels()


@contextmanager
def _statements(engine: AsyncEngine) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(" ".join(statement.split()))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


async def test_a_new_person_s_start_looks_up_no_role(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """Nothing can refer to an account its own event created: no ASN, PIC or
    administrator look-up runs for it (on PostgreSQL the whole step is five statements:
    claim, load, create both rows, save, queue the reply)."""
    clock = FrozenClock()
    await seed_opds(sessionmaker, clock)
    engine = sessionmaker.kw["bind"]
    chat = Chat(build_engine(sessionmaker, clock), clock, sender="7007")
    with _statements(engine) as seen:
        await chat.engine.handle_queued(chat_event(chat, "/start"))
    roles = [s for s in seen if any(t in s for t in (" asn", " pic", " administrator"))]
    assert roles == []
    if engine.dialect.name == "postgresql":
        assert len(seen) == 5, seen
    # The menu of a person with no role, as before.
    await Chat(build_engine(sessionmaker, clock), clock, sender="7008").say("/start")
    with _statements(engine) as seen:
        await chat.say("/start")  # known now: its roles are looked up
    assert any(" asn" in s for s in seen)


def chat_event(chat: Chat, text: str) -> Any:
    from handlers.commands import parse_command
    from handlers.types import EventKind, InboundEvent

    command = parse_command(text)
    assert command is not None
    return InboundEvent(
        channel=chat.channel,
        sender_id=chat.sender,
        update_id=f"u-{chat.sender}-{text}",
        received_at=chat.clock(),
        kind=EventKind.COMMAND,
        text=text,
        command=command.word,
        command_args=command.args,
    )


async def test_a_queued_reply_names_the_rows_waiting_before_it_for_that_person(
    db_engine: AsyncEngine,
) -> None:
    now = FrozenClock()()
    lease = now + timedelta(seconds=30)
    queued: dict[str, list[int]] = {"1": [], "2": []}
    for update, chat_id in enumerate(("1", "1", "2", "1")):
        async with db_engine.begin() as connection:
            store = await conversation_store(connection)
            row_id, earlier = await store.queue_replies(
                Channel.TELEGRAM, chat_id, f"u{update}", b"x", now=now, lease_until=lease
            )
        assert earlier == tuple(queued[chat_id])
        assert row_id not in earlier
        queued[chat_id].append(row_id)
    assert queued["1"] == sorted(queued["1"])
    assert len(set(queued["1"] + queued["2"])) == 4
