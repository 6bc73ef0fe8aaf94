"""Who can be reached for an OPD (PRODUCT 2, 4.7): its PICs, else the administrators.

An administrator may be a chat account too (`Administrator`), appointed from
the command line (`sertakan admin appoint`): that account gets the daily digest
of OPDs with work waiting and no PIC, the questions of OPDs with no PIC, and a
notice when somebody needed the PIC of an OPD that has none.

"Reachable" means a current appointment bound to a channel account: a PIC
appointed by phone who never wrote to the bot cannot be sent anything yet.

Every function works on the caller's `AsyncConnection` and never commits: a
change and its audit entry are one transaction.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Exists, Select, String, bindparam, cast, exists, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.vocabulary import Channel, Language, SponsorshipStatus, TicketStatus
from storage import appointments
from storage.audit import Actor
from storage.models import (
    Administrator,
    Asn,
    ChannelAccount,
    Opd,
    Outbox,
    Pic,
    Sponsorship,
    Ticket,
)

#: `Staff.key` of an administrator: "admin:<administrator id>".
ADMIN_KEY_PREFIX = "admin:"


@dataclasses.dataclass(frozen=True, slots=True)
class Staff:
    """A person who can be told something on their channel: a PIC or an administrator.

    `key` names them in dedupe keys ("pic:3", "admin:1"); `name` is the
    registered ASN's name, else the channel's display name, else None.
    """

    key: str
    name: str | None
    channel: Channel
    external_id: str
    language: Language


@dataclasses.dataclass(frozen=True, slots=True)
class AdminListing:
    """One current administrator account, for `sertakan admin list`."""

    admin_id: int
    channel: Channel
    external_id: str
    name: str | None
    appointed_at: datetime
    appointed_by: str


@dataclasses.dataclass(frozen=True, slots=True)
class UnstaffedOpd:
    """An OPD with no reachable PIC and something waiting for one."""

    opd_id: int
    code: str
    name: str
    #: Enrollments waiting to be checked.
    waiting: int
    #: When the oldest of them entered the queue (None without any).
    waiting_since: datetime | None
    #: Questions still open.
    open_questions: int


def _has_reachable_pic(opd_id: Any) -> Exists:
    return exists().where(
        Pic.opd_id == opd_id,
        Pic.removed_at.is_(None),
        Pic.channel_account_id.is_not(None),
    )


# Built once with bind parameters: constructing a statement per call cost more
# than running it (docs/BENCHMARKS.md, stepcost and "Kirim ke PIC in 7 statements").
_OPD_STAFF = (
    select(
        Pic.id,
        Asn.full_name,
        ChannelAccount.display_name,
        ChannelAccount.channel,
        ChannelAccount.external_id,
        ChannelAccount.language,
    )
    .join(ChannelAccount, ChannelAccount.id == Pic.channel_account_id)
    .outerjoin(Asn, Asn.channel_account_id == ChannelAccount.id)
    .where(Pic.opd_id == bindparam("opd_id"), Pic.removed_at.is_(None))
    .order_by(Pic.id)
)


async def opd_staff(connection: AsyncConnection, opd_id: int) -> list[Staff]:
    """The reachable PICs of the OPD, oldest appointment first."""
    rows = await connection.execute(_OPD_STAFF, {"opd_id": opd_id})
    return [
        Staff(
            f"pic:{row.id}",
            row.full_name or row.display_name,
            Channel(row.channel),
            row.external_id,
            Language(row.language),
        )
        for row in rows
    ]


@dataclasses.dataclass(frozen=True, slots=True)
class NoPicNoticeState:
    """What telling the administrators about an OPD without PIC would do, read at once."""

    #: The OPD has a reachable PIC (then there is nothing to tell).
    has_pic: bool
    #: Current administrator accounts.
    administrators: int
    #: Of them, those with no outbox row under their dedupe key yet (not told).
    untold: int


def _no_pic_notice_state() -> Select[Any]:
    current = Administrator.removed_at.is_(None)
    told = exists().where(
        Outbox.dedupe_key
        == bindparam("admin_key_prefix", type_=String) + cast(Administrator.id, String)
    )
    return select(
        _has_reachable_pic(bindparam("opd_id")).label("has_pic"),
        select(func.count())
        .select_from(Administrator)
        .where(current)
        .scalar_subquery()
        .label("administrators"),
        select(func.count())
        .select_from(Administrator)
        .where(current, ~told)
        .scalar_subquery()
        .label("untold"),
    )


#: Built once: a statement built per call costs more to build than to run (bench/).
_NO_PIC_NOTICE_STATE = _no_pic_notice_state()


async def no_pic_notice_state(
    connection: AsyncConnection, opd_id: int, *, dedupe_prefix: str
) -> NoPicNoticeState:
    """One statement: whether the OPD has a reachable PIC, how many administrators there
    are, and how many of them have no outbox row keyed `dedupe_prefix` + their `Staff.key`.

    The outbox keeps its rows (sent or not) for the retention period, and its
    dedupe key is unique, so "a row exists" is exactly "enqueueing the notice
    again would write nothing": a caller may skip the notice's work then. It
    reads the database, so it holds after a restart and across processes.
    """
    row = (
        await connection.execute(
            _NO_PIC_NOTICE_STATE,
            {"opd_id": opd_id, "admin_key_prefix": dedupe_prefix + ADMIN_KEY_PREFIX},
        )
    ).one()
    return NoPicNoticeState(bool(row.has_pic), int(row.administrators), int(row.untold))


async def administrators(connection: AsyncConnection) -> list[Staff]:
    """The current administrator accounts, oldest appointment first."""
    return [
        Staff(
            f"{ADMIN_KEY_PREFIX}{listing.admin_id}",
            listing.name,
            listing.channel,
            listing.external_id,
            language,
        )
        for listing, language in await _admin_rows(connection)
    ]


async def list_admins(connection: AsyncConnection) -> list[AdminListing]:
    """The current administrator accounts, for the command line."""
    return [listing for listing, _ in await _admin_rows(connection)]


_ADMIN_ROWS = (
    select(
        Administrator.id,
        ChannelAccount.channel,
        ChannelAccount.external_id,
        Asn.full_name,
        ChannelAccount.display_name,
        Administrator.appointed_at,
        Administrator.appointed_by,
        ChannelAccount.language,
    )
    .join(ChannelAccount, ChannelAccount.id == Administrator.channel_account_id)
    .outerjoin(Asn, Asn.channel_account_id == ChannelAccount.id)
    .where(Administrator.removed_at.is_(None))
    .order_by(Administrator.id)
)


async def _admin_rows(connection: AsyncConnection) -> list[tuple[AdminListing, Language]]:
    rows = await connection.execute(_ADMIN_ROWS)
    return [
        (
            AdminListing(
                row.id,
                Channel(row.channel),
                row.external_id,
                row.full_name or row.display_name,
                row.appointed_at,
                row.appointed_by,
            ),
            Language(row.language),
        )
        for row in rows
    ]


async def admin_id_for_account(connection: AsyncConnection, account_id: int) -> int | None:
    """The current administrator appointment of this channel account, if any."""
    return await appointments.current_appointment(
        connection, appointments.ADMINISTRATOR, account_id
    )


async def appoint_admin(
    connection: AsyncConnection,
    *,
    channel: Channel,
    external_id: str,
    actor: Actor,
    now: datetime,
) -> tuple[int, bool]:
    """Make the channel account an administrator; (its administrator id, whether new).

    The account row is created if the person never wrote yet (a WhatsApp
    account's id is the number without "+"). Appointing a current
    administrator again changes nothing. Audited as "admin.appoint".
    """
    return await appointments.appoint(
        connection,
        appointments.ADMINISTRATOR,
        channel=channel,
        external_id=external_id,
        actor=actor,
        now=now,
    )


async def remove_admin(
    connection: AsyncConnection, *, admin_id: int, actor: Actor, now: datetime
) -> None:
    """End the appointment `admin_id` (the row stays); audited as "admin.remove".

    Raises RoleError when there is no such current administrator.
    """
    await appointments.end_appointment(
        connection, appointments.ADMINISTRATOR, appointment_id=admin_id, actor=actor, now=now
    )


async def unstaffed_opds(connection: AsyncConnection) -> list[UnstaffedOpd]:
    """Active OPDs without a reachable PIC that have enrollments waiting or open questions.

    By OPD code. Two grouped reads, whatever the number of OPDs.
    """
    no_pic = ~_has_reachable_pic(Opd.id)
    waiting: dict[int, tuple[int, object]] = {
        int(row[0]): (int(row[1]), row[2])
        for row in await connection.execute(
            select(Sponsorship.opd_id, func.count(), func.min(Sponsorship.status_changed_at))
            .where(Sponsorship.status == SponsorshipStatus.WAITING_FOR_PIC)
            .group_by(Sponsorship.opd_id)
        )
    }
    questions = dict(
        (int(row[0]), int(row[1]))
        for row in await connection.execute(
            select(Ticket.opd_id, func.count())
            .where(Ticket.status == TicketStatus.OPEN)
            .group_by(Ticket.opd_id)
        )
    )
    candidates = set(waiting) | set(questions)
    if not candidates:
        return []
    rows = await connection.execute(
        select(Opd.id, Opd.code, Opd.name)
        .where(Opd.id.in_(candidates), Opd.active.is_(True), no_pic)
        .order_by(Opd.code)
    )
    result = []
    for row in rows:
        count, since = waiting.get(row.id, (0, None))
        result.append(
            UnstaffedOpd(row.id, row.code, row.name, count, _aware(since), questions.get(row.id, 0))
        )
    return result


def _aware(value: object) -> datetime | None:
    """An aggregate's datetime (SQLite returns text for min() over a UTC column)."""
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


async def has_reachable_pic(connection: AsyncConnection, opd_id: int) -> bool:
    """Whether the OPD has a current PIC bound to a channel account."""
    return bool(await connection.scalar(select(_has_reachable_pic(opd_id))))
