"""Questions to a person ("Tanya PIC", PRODUCT 4.7): tickets and their threads.

An ASN or a worker asks; the question belongs to their OPD. Who may answer
(`Scope`): the OPD's current PICs, and the administrators for OPDs with no
reachable PIC (`storage.admins`). A PIC appointed later finds the OPD's open
questions in their menu. Every question, answer and closing is audited; the
audit entry holds no text (only ids), the text lives in `ticket_message` and is
erased with the person (`delete_for_worker`, `delete_for_account`,
`redact_messages`).

Functions work on the caller's `AsyncConnection` and never commit.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, exists, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.vocabulary import AskerRole, TicketAuthor, TicketStatus
from storage import audit
from storage.audit import Actor
from storage.models import Asn, Opd, Pic, Ticket, TicketMessage, Worker

#: Longest message kept (the engine already refuses longer input than its own limit).
MAX_TEXT = 1000
#: Shortest question or answer accepted (fewer letters cannot say anything).
MIN_TEXT = 3


@dataclasses.dataclass(frozen=True, slots=True)
class Scope:
    """Whose questions a person may see and answer.

    A PIC: the questions of their OPD (`opd_id`). An administrator
    (`opd_id` None): the questions of OPDs that have no reachable PIC.
    `actor` is who is written in the audit log; `author` in the thread.
    """

    opd_id: int | None
    actor: Actor
    author: TicketAuthor
    account_id: int

    @classmethod
    def pic(cls, pic_id: int, opd_id: int, account_id: int) -> Scope:
        return cls(opd_id, Actor.pic(pic_id), TicketAuthor.PIC, account_id)

    @classmethod
    def admin(cls, account_id: int) -> Scope:
        return cls(None, Actor.account("admin", account_id), TicketAuthor.ADMIN, account_id)


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    author: TicketAuthor
    body: str
    created_at: datetime


@dataclasses.dataclass(frozen=True, slots=True)
class TicketView:
    """A question with its thread, as the person answering it sees it."""

    id: int
    opd_id: int
    opd_name: str
    asker_role: AskerRole
    #: The ASN's or worker's name ("-" once erased).
    asker_name: str
    asker_account_id: int
    status: TicketStatus
    created_at: datetime
    messages: tuple[Message, ...]

    @property
    def question(self) -> str:
        return self.messages[0].body if self.messages else ""


@dataclasses.dataclass(frozen=True, slots=True)
class TicketLine:
    """One open question in a list."""

    id: int
    opd_name: str
    asker_name: str
    question: str
    updated_at: datetime
    #: Answers already given.
    answers: int


def clean_text(text: str) -> str | None:
    """A typed question or answer, trimmed line by line; None when it says nothing.

    At least `MIN_TEXT` characters with a letter; longer than `MAX_TEXT` is None
    too (the caller says which problem from the length).
    """
    lines = [re.sub(r"[ \t]+", " ", line).strip() for line in text.strip().splitlines()]
    cleaned = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    if len(cleaned) < MIN_TEXT or len(cleaned) > MAX_TEXT:
        return None
    if not any(ch.isalpha() for ch in cleaned):
        return None
    return cleaned


def _asker_name() -> Any:
    # The ASN's name for an ASN's question, the worker's for a worker's.
    return func.coalesce(
        select(Asn.full_name)
        .where(
            Asn.channel_account_id == Ticket.asker_account_id, Ticket.asker_role == AskerRole.ASN
        )
        .correlate(Ticket)
        .scalar_subquery(),
        select(Worker.full_name)
        .where(Worker.id == Ticket.worker_id)
        .correlate(Ticket)
        .scalar_subquery(),
        "-",
    )


def _in_scope(scope: Scope) -> Any:
    if scope.opd_id is not None:
        return Ticket.opd_id == scope.opd_id
    return ~exists().where(
        Pic.opd_id == Ticket.opd_id,
        Pic.removed_at.is_(None),
        Pic.channel_account_id.is_not(None),
    )


async def open_ticket(
    connection: AsyncConnection,
    *,
    opd_id: int,
    asker_account_id: int,
    asker_role: AskerRole,
    worker_id: int | None,
    text: str,
    actor: Actor,
    now: datetime,
) -> int:
    """Write a new open question with its first message; its id. Audited "ticket.open"."""
    result = await connection.execute(
        insert(Ticket).values(
            opd_id=opd_id,
            asker_account_id=asker_account_id,
            asker_role=asker_role,
            worker_id=worker_id,
            status=TicketStatus.OPEN,
            created_at=now,
            updated_at=now,
        )
    )
    key = result.inserted_primary_key
    assert key is not None
    ticket_id = int(key[0])
    await _add_message(connection, ticket_id, TicketAuthor.ASKER, asker_account_id, text, now)
    await audit.record(
        connection,
        actor,
        "ticket.open",
        record_type="ticket",
        record_id=ticket_id,
        opd_id=opd_id,
        now=now,
        details={"asker_role": asker_role.value},
    )
    return ticket_id


async def _add_message(
    connection: AsyncConnection,
    ticket_id: int,
    author: TicketAuthor,
    account_id: int | None,
    text: str,
    now: datetime,
) -> int:
    result = await connection.execute(
        insert(TicketMessage).values(
            ticket_id=ticket_id,
            author=author,
            author_account_id=account_id,
            body=text[:MAX_TEXT],
            created_at=now,
        )
    )
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


async def get(connection: AsyncConnection, ticket_id: int, scope: Scope) -> TicketView | None:
    """The question `ticket_id` with its thread when `scope` may see it, else None."""
    row = (
        await connection.execute(
            select(
                Ticket.id,
                Ticket.opd_id,
                Opd.name,
                Ticket.asker_role,
                _asker_name().label("asker_name"),
                Ticket.asker_account_id,
                Ticket.status,
                Ticket.created_at,
            )
            .join(Opd, Opd.id == Ticket.opd_id)
            .where(Ticket.id == ticket_id, _in_scope(scope))
        )
    ).first()
    if row is None:
        return None
    messages = await connection.execute(
        select(TicketMessage.author, TicketMessage.body, TicketMessage.created_at)
        .where(TicketMessage.ticket_id == ticket_id)
        .order_by(TicketMessage.id)
    )
    return TicketView(
        id=row.id,
        opd_id=row.opd_id,
        opd_name=row.name,
        asker_role=AskerRole(row.asker_role),
        asker_name=row.asker_name,
        asker_account_id=row.asker_account_id,
        status=TicketStatus(row.status),
        created_at=row.created_at,
        messages=tuple(Message(TicketAuthor(m.author), m.body, m.created_at) for m in messages),
    )


async def open_tickets(
    connection: AsyncConnection, scope: Scope, *, limit: int
) -> tuple[list[TicketLine], int]:
    """The open questions `scope` answers, oldest first (up to `limit`), and how many in all."""
    condition = (Ticket.status == TicketStatus.OPEN, _in_scope(scope))
    total = int(
        await connection.scalar(select(func.count()).select_from(Ticket).where(*condition)) or 0
    )
    if not total or limit <= 0:
        return [], total
    first_message = (
        select(TicketMessage.body)
        .where(TicketMessage.ticket_id == Ticket.id)
        .order_by(TicketMessage.id)
        .limit(1)
        .correlate(Ticket)
        .scalar_subquery()
    )
    answers = (
        select(func.count())
        .select_from(TicketMessage)
        .where(TicketMessage.ticket_id == Ticket.id, TicketMessage.author != TicketAuthor.ASKER)
        .correlate(Ticket)
        .scalar_subquery()
    )
    rows = await connection.execute(
        select(
            Ticket.id,
            Opd.name,
            _asker_name().label("asker_name"),
            first_message.label("question"),
            Ticket.updated_at,
            answers.label("answers"),
        )
        .join(Opd, Opd.id == Ticket.opd_id)
        .where(*condition)
        .order_by(Ticket.created_at, Ticket.id)
        .limit(limit)
    )
    return [
        TicketLine(
            row.id, row.name, row.asker_name, row.question or "", row.updated_at, row.answers
        )
        for row in rows
    ], total


async def count_open(
    connection: AsyncConnection, opd_id: int, *, since: datetime | None = None
) -> int:
    """Open questions of the OPD (asked after `since` when given)."""
    conditions = [Ticket.opd_id == opd_id, Ticket.status == TicketStatus.OPEN]
    if since is not None:
        conditions.append(Ticket.created_at > since)
    return int(
        await connection.scalar(select(func.count()).select_from(Ticket).where(*conditions)) or 0
    )


async def answer(
    connection: AsyncConnection,
    ticket_id: int,
    scope: Scope,
    text: str,
    *,
    close: bool,
    now: datetime,
) -> int | None:
    """Add an answer to an open question `scope` may answer (and close it); the message id.

    None when the question is not there, not in scope or closed already
    (somebody else closed it meanwhile). Audited "ticket.answer" (and "ticket.close").
    """
    view = await get(connection, ticket_id, scope)
    if view is None or view.status is not TicketStatus.OPEN:
        return None
    message_id = await _add_message(
        connection, ticket_id, scope.author, scope.account_id, text, now
    )
    await connection.execute(update(Ticket).where(Ticket.id == ticket_id).values(updated_at=now))
    await audit.record(
        connection,
        scope.actor,
        "ticket.answer",
        record_type="ticket",
        record_id=ticket_id,
        opd_id=view.opd_id,
        now=now,
        details={"message_id": message_id},
    )
    if close:
        await _close(connection, ticket_id, view.opd_id, scope, now)
    return message_id


async def close(
    connection: AsyncConnection, ticket_id: int, scope: Scope, *, now: datetime
) -> bool:
    """Close an open question `scope` may answer; False when it is not there or not open."""
    view = await get(connection, ticket_id, scope)
    if view is None or view.status is not TicketStatus.OPEN:
        return False
    return await _close(connection, ticket_id, view.opd_id, scope, now)


async def _close(
    connection: AsyncConnection, ticket_id: int, opd_id: int, scope: Scope, now: datetime
) -> bool:
    result = await connection.execute(
        update(Ticket)
        .where(Ticket.id == ticket_id, Ticket.status == TicketStatus.OPEN)
        .values(
            status=TicketStatus.CLOSED, closed_at=now, closed_by=str(scope.actor), updated_at=now
        )
    )
    if not result.rowcount:
        return False
    await audit.record(
        connection,
        scope.actor,
        "ticket.close",
        record_type="ticket",
        record_id=ticket_id,
        opd_id=opd_id,
        now=now,
    )
    return True


async def delete_closed_before(connection: AsyncConnection, before: datetime) -> int:
    """Delete questions closed before `before` with their threads (retention); how many.

    Open questions are never deleted by age: somebody still waits for an answer.
    """
    condition = (Ticket.status == TicketStatus.CLOSED) & (Ticket.closed_at < before)
    count = int(
        await connection.scalar(select(func.count()).select_from(Ticket).where(condition)) or 0
    )
    if count:
        await _delete(connection, condition)
    return count


async def delete_for_worker(connection: AsyncConnection, worker_id: int) -> None:
    """Erase the questions a worker asked (their text is the worker's personal data)."""
    await _delete(connection, Ticket.worker_id == worker_id)


async def delete_for_account(connection: AsyncConnection, account_id: int) -> None:
    """Erase the questions asked from a channel account (an erased number's)."""
    await _delete(connection, Ticket.asker_account_id == account_id)
    # Answers written from the account stay with their questions, without the account.
    await connection.execute(
        update(TicketMessage)
        .where(TicketMessage.author_account_id == account_id)
        .values(author_account_id=None)
    )


async def _delete(connection: AsyncConnection, condition: Any) -> None:
    ids = select(Ticket.id).where(condition)
    await connection.execute(delete(TicketMessage).where(TicketMessage.ticket_id.in_(ids)))
    await connection.execute(delete(Ticket).where(condition))


async def messages_quoting(
    connection: AsyncConnection, condition: Any
) -> Sequence[tuple[int, str]]:
    """(id, body) of the messages matching `condition` (a LIKE over the body)."""
    rows = await connection.execute(select(TicketMessage.id, TicketMessage.body).where(condition))
    return [(row.id, row.body) for row in rows]


async def set_body(connection: AsyncConnection, message_id: int, body: str) -> None:
    await connection.execute(
        update(TicketMessage).where(TicketMessage.id == message_id).values(body=body)
    )
