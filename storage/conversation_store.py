"""The per-event hot path: claim the update id, load and lock the person's state, save it.

Every inbound event runs exactly these statements, so they are kept apart from
the repositories and come in two implementations behind one interface:

- `CoreConversationStore`: SQLAlchemy Core with statements built once; used on
  PostgreSQL (and any other database).
- `SqliteConversationStore`: the same SQL run on the sqlite3 connection
  directly. Through SQLAlchemy's asyncio layer each statement cost about 0.1 ms
  of Python, against about 0.01 ms in sqlite3 itself, and the engine runs five of
  them per event (docs/BENCHMARKS.md). It uses the very connection and
  transaction that SQLAlchemy opened (BEGIN IMMEDIATE), so the flows' ORM work
  and these statements commit or roll back together. Values are stored exactly
  as SQLAlchemy stores them (UTC "YYYY-MM-DD HH:MM:SS.ffffff", JSON text), so
  either side reads what the other wrote.

The test suite runs on SQLite and on PostgreSQL, so each implementation is
exercised by every engine test.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import bindparam, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.vocabulary import Channel, Language
from storage.db import insert_for
from storage.models import ChannelAccount, Conversation, PendingReply, UtcDateTime
from storage.sqlite_inline import InlineConnection


@dataclasses.dataclass(slots=True)
class ConversationState:
    """Where a person is: the flow and step, the answers so far, and a parked draft.

    The engine works on this object during an event and saves it at the end.
    """

    flow: str | None
    step: str | None
    #: The flow's answers so far.
    data: dict[str, Any]
    #: Steps visited, for "kembali" (back).
    history: list[str]
    #: A parked flow {flow, step, data, history} offered for resumption.
    draft: dict[str, Any] | None
    #: Bumped whenever a new question is asked; tags that question's buttons.
    version: int


@dataclasses.dataclass(slots=True)
class ConversationRecord:
    """A person's account and conversation as read (and locked) for one event."""

    account_id: int
    language: Language
    conversation_id: int
    state: ConversationState
    #: The previous inbound event's time.
    updated_at: datetime
    #: The account was created by this event (first contact): nothing refers to it yet,
    #: so it is nobody's ASN, PIC or administrator (a PIC appointment for the phone a
    #: WhatsApp account proves may still be waiting: `storage.roles.pic_for_account`).
    created: bool = False


class ConversationStore(Protocol):
    async def claim(self, channel: Channel, update_id: str, now: datetime) -> bool:
        """Record the update id; False when it was already recorded (a replay).

        On PostgreSQL a concurrent claim of the same id waits for the first
        transaction and then returns False, so two processes never both apply it.
        """
        ...

    async def open(
        self,
        channel: Channel,
        external_id: str,
        *,
        language: Language,
        display_name: str | None,
        now: datetime,
    ) -> ConversationRecord:
        """The person's record, locked until commit; created on first contact."""
        ...

    async def save(self, conversation_id: int, state: ConversationState, *, now: datetime) -> None:
        """Write the new state; `now` becomes the last inbound time."""
        ...

    async def language(self, channel: Channel, external_id: str) -> Language | None:
        """The language an account chose, or None for an unknown account."""
        ...

    async def set_language(self, account_id: int, language: Language) -> None: ...

    async def queue_replies(
        self,
        channel: Channel,
        chat_id: str,
        update_id: str,
        payload: bytes,
        *,
        now: datetime,
        lease_until: datetime,
    ) -> tuple[int, tuple[int, ...]]:
        """Store replies to `chat_id` (storage.reply_queue), held by this process until
        `lease_until`; returns the new row's id and the ids of the rows already
        waiting for the same person (they go first)."""
        ...


async def conversation_store(connection: AsyncConnection) -> ConversationStore:
    """The store for this connection: direct sqlite3 on SQLite, SQLAlchemy Core elsewhere."""
    if connection.dialect.name == "sqlite":
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection
        if isinstance(driver, InlineConnection):
            return SqliteConversationStore(driver.sqlite3_connection)
    return CoreConversationStore(connection)


# -- SQLAlchemy Core ----------------------------------------------------------------

#: Fixed text: compiled once, valid on SQLite (3.24+) and PostgreSQL alike.
_CLAIM_UPDATE = text(
    "INSERT INTO processed_update (channel, update_id, processed_at) "
    "VALUES (:channel, :update_id, :processed_at) "
    "ON CONFLICT (channel, update_id) DO NOTHING"
).bindparams(bindparam("processed_at", type_=UtcDateTime()))

_LOAD = (
    select(
        ChannelAccount.id,
        ChannelAccount.language,
        Conversation.id,
        Conversation.flow,
        Conversation.step,
        Conversation.data,
        Conversation.history,
        Conversation.draft,
        Conversation.version,
        Conversation.updated_at,
    )
    .join(Conversation, Conversation.channel_account_id == ChannelAccount.id)
    .where(
        ChannelAccount.channel == bindparam("channel"),
        ChannelAccount.external_id == bindparam("external_id"),
    )
    .with_for_update(of=Conversation)
)

# Built once with bind parameters: values given inline (JSON dicts) would be
# hashed into SQLAlchemy's statement cache key on every event.
_SAVE = (
    update(Conversation)
    .where(Conversation.id == bindparam("conversation_id"))
    .values(
        flow=bindparam("flow"),
        step=bindparam("step"),
        data=bindparam("data"),
        history=bindparam("history"),
        draft=bindparam("draft"),
        version=bindparam("version"),
        updated_at=bindparam("updated_at"),
    )
)

_LANGUAGE = select(ChannelAccount.language).where(
    ChannelAccount.channel == bindparam("channel"),
    ChannelAccount.external_id == bindparam("external_id"),
)
_SET_LANGUAGE = (
    update(ChannelAccount)
    .where(ChannelAccount.id == bindparam("account_id"))
    .values(language=bindparam("language"))
)


_WAITING_REPLIES = (
    select(PendingReply.id)
    .where(
        PendingReply.channel == bindparam("channel"), PendingReply.chat_id == bindparam("chat_id")
    )
    .order_by(PendingReply.id)
)
_QUEUE_REPLY = (
    insert(PendingReply)
    .values(
        channel=bindparam("channel"),
        chat_id=bindparam("chat_id"),
        update_id=bindparam("update_id"),
        payload_ciphertext=bindparam("payload_ciphertext"),
        parts_sent=0,
        attempts=0,
        created_at=bindparam("created_at"),
        not_before=bindparam("not_before"),
        lease_until=bindparam("lease_until"),
    )
    .returning(PendingReply.id)
)


# PostgreSQL, first contact: both rows in one statement (a new person's /start made
# five: the failed load, the account's INSERT, a SELECT of its id, the conversation's
# INSERT and the load again). The account's INSERT leaves a row that exists out (an
# account created elsewhere, or by a concurrent first event): then nothing is
# returned and the general path below runs. Rows this transaction inserted are its
# own until it commits, as the load's FOR UPDATE would have made them.
_CREATE_BOTH = text(
    "WITH account AS ("
    "INSERT INTO channel_account (channel, external_id, language, display_name, created_at) "
    "VALUES (:channel, :external_id, :language, :display_name, :now) "
    "ON CONFLICT (channel, external_id) DO NOTHING RETURNING id) "
    "INSERT INTO conversation (channel_account_id, data, history, version, updated_at) "
    "SELECT id, '{}', '[]', 0, :now FROM account "
    "RETURNING channel_account_id, id"
).bindparams(bindparam("now", type_=UtcDateTime()))

# PostgreSQL: the reply's INSERT and the ids of the rows already waiting for the person
# in one statement. The main query's subquery reads the statement's snapshot, which
# does not hold the row its WITH inserts: only the earlier rows.
_QUEUE_REPLY_AND_EARLIER = text(
    "WITH queued AS ("
    "INSERT INTO pending_reply (channel, chat_id, update_id, payload_ciphertext, parts_sent, "
    "attempts, created_at, not_before, lease_until) "
    "VALUES (:channel, :chat_id, :update_id, :payload_ciphertext, 0, 0, :created_at, "
    ":not_before, :lease_until) RETURNING id) "
    "SELECT queued.id, ARRAY(SELECT id FROM pending_reply "
    "WHERE channel = :channel AND chat_id = :chat_id ORDER BY id) FROM queued"
).bindparams(
    bindparam("created_at", type_=UtcDateTime()),
    bindparam("not_before", type_=UtcDateTime()),
    bindparam("lease_until", type_=UtcDateTime()),
)


def _record(row: Any) -> ConversationRecord:
    return ConversationRecord(
        account_id=row[0],
        language=Language(row[1]),
        conversation_id=row[2],
        state=ConversationState(
            flow=row[3],
            step=row[4],
            data=dict(row[5] or {}),
            history=list(row[6] or []),
            draft=dict(row[7]) if row[7] else None,
            version=row[8],
        ),
        updated_at=row[9],
    )


class CoreConversationStore:
    """`ConversationStore` in SQLAlchemy Core (PostgreSQL: the SELECT locks the row)."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection
        self._postgresql = connection.dialect.name == "postgresql"

    async def claim(self, channel: Channel, update_id: str, now: datetime) -> bool:
        result = await self._connection.execute(
            _CLAIM_UPDATE,
            {"channel": channel.value, "update_id": update_id, "processed_at": now},
        )
        return bool(result.rowcount)

    async def _load(self, channel: Channel, external_id: str) -> ConversationRecord | None:
        params = {"channel": channel.value, "external_id": external_id}
        row = (await self._connection.execute(_LOAD, params)).first()
        return _record(row) if row is not None else None

    async def open(
        self,
        channel: Channel,
        external_id: str,
        *,
        language: Language,
        display_name: str | None,
        now: datetime,
    ) -> ConversationRecord:
        record = await self._load(channel, external_id)
        if record is not None:
            return record
        if self._postgresql:
            created = (
                await self._connection.execute(
                    _CREATE_BOTH,
                    {
                        "channel": channel.value,
                        "external_id": external_id,
                        "language": language.value,
                        "display_name": display_name,
                        "now": now,
                    },
                )
            ).first()
            if created is not None:
                return ConversationRecord(
                    account_id=created[0],
                    language=language,
                    conversation_id=created[1],
                    state=ConversationState(
                        flow=None, step=None, data={}, history=[], draft=None, version=0
                    ),
                    updated_at=now,
                    created=True,
                )
        insert = insert_for(self._connection.dialect.name)
        account = await self._connection.execute(
            insert(ChannelAccount)
            .values(
                channel=channel.value,
                external_id=external_id,
                language=language.value,
                display_name=display_name,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["channel", "external_id"])
        )
        account_id = (
            await self._connection.execute(
                select(ChannelAccount.id).where(
                    ChannelAccount.channel == channel, ChannelAccount.external_id == external_id
                )
            )
        ).scalar_one()
        await self._connection.execute(
            insert(Conversation)
            .values(channel_account_id=account_id, data={}, history=[], version=0, updated_at=now)
            .on_conflict_do_nothing(index_elements=["channel_account_id"])
        )
        record = await self._load(channel, external_id)
        assert record is not None
        return dataclasses.replace(record, created=account.rowcount == 1)

    async def save(self, conversation_id: int, state: ConversationState, *, now: datetime) -> None:
        await self._connection.execute(
            _SAVE,
            {
                "conversation_id": conversation_id,
                "flow": state.flow,
                "step": state.step,
                "data": state.data,
                "history": state.history,
                "draft": state.draft,
                "version": state.version,
                "updated_at": now,
            },
        )

    async def language(self, channel: Channel, external_id: str) -> Language | None:
        params = {"channel": channel.value, "external_id": external_id}
        value = (await self._connection.execute(_LANGUAGE, params)).scalar_one_or_none()
        return Language(value) if value is not None else None

    async def set_language(self, account_id: int, language: Language) -> None:
        await self._connection.execute(
            _SET_LANGUAGE, {"account_id": account_id, "language": language.value}
        )

    async def queue_replies(
        self,
        channel: Channel,
        chat_id: str,
        update_id: str,
        payload: bytes,
        *,
        now: datetime,
        lease_until: datetime,
    ) -> tuple[int, tuple[int, ...]]:
        params = {"channel": channel.value, "chat_id": chat_id}
        if self._postgresql:
            queued = (
                await self._connection.execute(
                    _QUEUE_REPLY_AND_EARLIER,
                    {
                        **params,
                        "update_id": update_id,
                        "payload_ciphertext": payload,
                        "created_at": now,
                        "not_before": now,
                        "lease_until": lease_until,
                    },
                )
            ).one()
            return int(queued[0]), tuple(queued[1])
        earlier = tuple((await self._connection.execute(_WAITING_REPLIES, params)).scalars())
        row_id = (
            await self._connection.execute(
                _QUEUE_REPLY,
                {
                    **params,
                    "update_id": update_id,
                    "payload_ciphertext": payload,
                    "created_at": now,
                    "not_before": now,
                    "lease_until": lease_until,
                },
            )
        ).scalar_one()
        return int(row_id), earlier


# -- sqlite3 directly ------------------------------------------------------------------


def _sqlite_time(moment: datetime) -> str:
    """SQLAlchemy's SQLite DATETIME format, in UTC (as `UtcDateTime` stores it)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _from_sqlite_time(value: str) -> datetime:
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def _from_json(value: str | None) -> Any:
    return json.loads(value) if value is not None else None


_SQLITE_LOAD = (
    "SELECT a.id, a.language, c.id, c.flow, c.step, c.data, c.history, c.draft, c.version, "
    "c.updated_at FROM channel_account AS a JOIN conversation AS c "
    "ON c.channel_account_id = a.id WHERE a.channel = ? AND a.external_id = ?"
)


class SqliteConversationStore:
    """`ConversationStore` on the sqlite3 connection (the transaction holds SQLite's write lock)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    async def claim(self, channel: Channel, update_id: str, now: datetime) -> bool:
        cursor = self._db.execute(
            "INSERT INTO processed_update (channel, update_id, processed_at) VALUES (?, ?, ?) "
            "ON CONFLICT (channel, update_id) DO NOTHING",
            (channel.value, update_id, _sqlite_time(now)),
        )
        return cursor.rowcount == 1

    def _load(self, channel: Channel, external_id: str) -> ConversationRecord | None:
        row = self._db.execute(_SQLITE_LOAD, (channel.value, external_id)).fetchone()
        if row is None:
            return None
        return _record(
            (
                *row[:5],
                _from_json(row[5]),
                _from_json(row[6]),
                _from_json(row[7]),
                row[8],
                _from_sqlite_time(row[9]),
            )
        )

    async def open(
        self,
        channel: Channel,
        external_id: str,
        *,
        language: Language,
        display_name: str | None,
        now: datetime,
    ) -> ConversationRecord:
        record = self._load(channel, external_id)
        if record is not None:
            return record
        account = self._db.execute(
            "INSERT INTO channel_account "
            "(channel, external_id, language, display_name, created_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (channel, external_id) DO NOTHING",
            (channel.value, external_id, language.value, display_name, _sqlite_time(now)),
        )
        (account_id,) = self._db.execute(
            "SELECT id FROM channel_account WHERE channel = ? AND external_id = ?",
            (channel.value, external_id),
        ).fetchone()
        self._db.execute(
            "INSERT INTO conversation (channel_account_id, data, history, version, updated_at) "
            "VALUES (?, '{}', '[]', 0, ?) ON CONFLICT (channel_account_id) DO NOTHING",
            (account_id, _sqlite_time(now)),
        )
        record = self._load(channel, external_id)
        assert record is not None
        return dataclasses.replace(record, created=account.rowcount == 1)

    async def save(self, conversation_id: int, state: ConversationState, *, now: datetime) -> None:
        self._db.execute(
            "UPDATE conversation SET flow = ?, step = ?, data = ?, history = ?, draft = ?, "
            "version = ?, updated_at = ? WHERE id = ?",
            (
                state.flow,
                state.step,
                json.dumps(state.data),
                json.dumps(state.history),
                json.dumps(state.draft) if state.draft is not None else None,
                state.version,
                _sqlite_time(now),
                conversation_id,
            ),
        )

    async def language(self, channel: Channel, external_id: str) -> Language | None:
        row = self._db.execute(
            "SELECT language FROM channel_account WHERE channel = ? AND external_id = ?",
            (channel.value, external_id),
        ).fetchone()
        return Language(row[0]) if row is not None else None

    async def set_language(self, account_id: int, language: Language) -> None:
        self._db.execute(
            "UPDATE channel_account SET language = ? WHERE id = ?", (language.value, account_id)
        )

    async def queue_replies(
        self,
        channel: Channel,
        chat_id: str,
        update_id: str,
        payload: bytes,
        *,
        now: datetime,
        lease_until: datetime,
    ) -> tuple[int, tuple[int, ...]]:
        earlier = tuple(
            row[0]
            for row in self._db.execute(
                "SELECT id FROM pending_reply WHERE channel = ? AND chat_id = ? ORDER BY id",
                (channel.value, chat_id),
            )
        )
        cursor = self._db.execute(
            "INSERT INTO pending_reply (channel, chat_id, update_id, payload_ciphertext, "
            "parts_sent, attempts, created_at, not_before, lease_until) "
            "VALUES (?, ?, ?, ?, 0, 0, ?, ?, ?)",
            (
                channel.value,
                chat_id,
                update_id,
                payload,
                _sqlite_time(now),
                _sqlite_time(now),
                _sqlite_time(lease_until),
            ),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid, earlier
