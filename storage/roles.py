"""PIC roles (PRODUCT 4.5, 6): appointments, one-time invite codes, and who is PIC of what.

A PIC acts for one OPD, the one of their current appointment (`pic.removed_at
IS NULL`); every PIC query is scoped by the OPD this module derives from the
PIC's own account (`pic_for_account`), never by an OPD the person names.

An appointment is made in one of three ways:
- by the administrator for a channel account (`appoint` with a Telegram id);
- by the administrator for a phone number (`appoint` with `phone_e164`): the
  row stays unbound until a WhatsApp account with that number writes, and
  `pic_for_account` binds it to that account (a phone typed on Telegram or the
  console proves nothing and binds nothing);
- by redeeming a one-time invite code (`redeem_invite`).

Every function works on the caller's `AsyncConnection` and never commits: an
action and its audit entry (`storage.audit`) are written in one transaction.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    bindparam,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.vocabulary import Channel, Language
from storage import audit
from storage.audit import Actor
from storage.db import insert_for
from storage.models import Asn, AuditLog, ChannelAccount, InviteCode, Opd, Pic

#: Invite code characters: digits and capitals without 0/O and 1/I, which are
#: easy to mix up when a code is read aloud or copied from a screen.
INVITE_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
INVITE_PREFIX = "PIC-"
INVITE_LENGTH = 8
# "PIC" can never start a code's random part ("I" is not in the alphabet), so a
# typed prefix is told apart from the code itself without ambiguity.
_INVITE_BODY = re.compile(f"[{INVITE_ALPHABET}]{{{INVITE_LENGTH}}}")
_TYPED_NOISE = re.compile(r"[\s\-_]+")
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")


class RoleError(Exception):
    """An administrator's request cannot be carried out; the message says why (English)."""


@dataclasses.dataclass(frozen=True, slots=True)
class PicRole:
    """The OPD a PIC acts for, derived from their own account."""

    pic_id: int
    opd_id: int
    opd_name: str
    opd_code: str


@dataclasses.dataclass(frozen=True, slots=True)
class PicListing:
    """One current appointment, for `sertakan pic list`.

    `channel`/`external_id` are None for a phone appointment no account has
    claimed yet; `phone_e164` is set for appointments made by phone.
    `display_name` is the registered ASN's name, else the channel's display name.
    """

    pic_id: int
    opd_code: str
    opd_name: str
    channel: Channel | None
    external_id: str | None
    phone_e164: str | None
    display_name: str | None
    appointed_at: datetime
    appointed_by: str


class InviteProblem(StrEnum):
    """Why an invite code made nobody a PIC."""

    UNKNOWN = "unknown"
    USED = "used"
    EXPIRED = "expired"
    ALREADY_PIC_ELSEWHERE = "already_pic_elsewhere"
    #: Too many wrong codes from this account lately (guessing is throttled).
    TOO_MANY_ATTEMPTS = "too_many_attempts"


#: Wrong invite codes one account may send per `INVITE_ATTEMPT_WINDOW`. A code
#: has 40 random bits: at this pace guessing one takes longer than any code lives.
MAX_FAILED_INVITES = 5
INVITE_ATTEMPT_WINDOW = timedelta(hours=1)


_INSERT_PIC = insert(Pic)
_ROLE_COLUMNS = (
    Pic.id.label("pic_id"),
    Opd.id.label("opd_id"),
    Opd.name.label("opd_name"),
    Opd.code.label("opd_code"),
)

# The phone an account proves: only a WhatsApp account proves its number (the
# platform vouches for the sender). A phone typed during ASN registration on
# Telegram or the console proves nothing, so it never binds an appointment:
# appoint Telegram PICs by id or with an invite code.
_ACCOUNT_PHONE = (
    select(literal("+") + ChannelAccount.external_id)
    .where(
        ChannelAccount.id == bindparam("account_id"),
        ChannelAccount.channel == Channel.WHATSAPP,
    )
    .scalar_subquery()
)
_BOUND_ROLE = (
    select(*_ROLE_COLUMNS)
    .join(Opd, Opd.id == Pic.opd_id)
    .where(Pic.channel_account_id == bindparam("account_id"), Pic.removed_at.is_(None))
)
# One statement for the hot path: the account's own appointment (uq_pic_active_account)
# and the current appointments for the phone it proves (ix_pic_phone_e164), bound or
# not; which of the latter are unbound is sorted out in Python, so the planner is
# not tempted to scan every unbound row of the unique index. Usually no row.
_ROLE_OR_CLAIMABLE = union_all(
    select(Pic.channel_account_id, *_ROLE_COLUMNS)
    .join(Opd, Opd.id == Pic.opd_id)
    .where(Pic.channel_account_id == bindparam("account_id"), Pic.removed_at.is_(None)),
    select(Pic.channel_account_id, *_ROLE_COLUMNS)
    .join(Opd, Opd.id == Pic.opd_id)
    .where(Pic.phone_e164 == _ACCOUNT_PHONE, Pic.removed_at.is_(None)),
)
#: Whether `pic_for_account` can find anything for the account (`account_id`): an
#: appointment of its own, or one for the phone it proves (bound or not). When
#: false it returns None and writes nothing, so a caller that reads this with other
#: facts in one statement (the main menu) may skip it.
PIC_POSSIBLE = or_(
    exists().where(Pic.channel_account_id == bindparam("account_id"), Pic.removed_at.is_(None)),
    exists().where(Pic.phone_e164 == _ACCOUNT_PHONE, Pic.removed_at.is_(None)),
)
_BIND = (
    update(Pic)
    .where(
        Pic.id == bindparam("pic_id"),
        Pic.channel_account_id.is_(None),
        Pic.removed_at.is_(None),
    )
    .values(channel_account_id=bindparam("account_id"))
)


async def pic_for_account(
    connection: AsyncConnection, account_id: int, *, now: datetime
) -> PicRole | None:
    """The current PIC role of this channel account, or None.

    When the account has no appointment of its own but an unbound appointment
    was made for the phone it proves (see `_ACCOUNT_PHONE`), that appointment is
    bound to this account here, in the caller's transaction, and audited as
    "pic.bind". The first account to prove the number gets the role; the same
    person's other accounts do not. The common case (not a PIC, nothing to
    bind) is one indexed query.
    """
    rows = (await connection.execute(_ROLE_OR_CLAIMABLE, {"account_id": account_id})).all()
    for row in rows:
        if row.channel_account_id == account_id:
            return PicRole(*row[1:])
    claimable = [row for row in rows if row.channel_account_id is None]
    if not claimable:
        return None
    # The oldest appointment first, should the number have been appointed twice.
    claim = min(claimable, key=lambda row: row.pic_id)
    role = PicRole(*claim[1:])
    try:
        async with connection.begin_nested():
            bound = await connection.execute(
                _BIND, {"pic_id": role.pic_id, "account_id": account_id}
            )
    except IntegrityError:
        # The account got an appointment of its own meanwhile (uq_pic_active_account).
        return await _bound_role(connection, account_id)
    if not bound.rowcount:
        # Another account bound it first.
        return await _bound_role(connection, account_id)
    await audit.record(
        connection,
        Actor.account("account", account_id),
        "pic.bind",
        record_type="pic",
        record_id=role.pic_id,
        opd_id=role.opd_id,
        now=now,
    )
    return role


async def _bound_role(connection: AsyncConnection, account_id: int) -> PicRole | None:
    row = (await connection.execute(_BOUND_ROLE, {"account_id": account_id})).first()
    return PicRole(*row) if row is not None else None


async def appoint(
    connection: AsyncConnection,
    *,
    opd_id: int,
    channel: Channel | None,
    external_id: str | None,
    phone_e164: str | None,
    actor: Actor,
    now: datetime,
) -> int:
    """Appoint a PIC of the OPD `opd_id`; returns the pic id.

    Either by channel account (`channel` and `external_id`, e.g. TELEGRAM and
    "12345"; the account row is created if the person never wrote yet) or by
    phone (`phone_e164`, bound later by `pic_for_account`). Appointing somebody
    who is already PIC of this OPD returns the existing id and writes nothing.
    Raises RoleError when the OPD does not exist or is inactive, when the
    account (or an account proving the phone) is PIC of another OPD, or when
    the phone is appointed for another OPD already: a PIC serves one OPD.
    """
    by_account = channel is not None or external_id is not None
    if by_account == (phone_e164 is not None):
        raise RoleError("appoint either a channel account or a phone number")
    opd = await _active_opd(connection, opd_id)
    details: dict[str, Any]
    if by_account:
        if channel is None or not external_id:
            raise RoleError("a channel account needs both the channel and its id")
        account_id = await _account_id(connection, channel, external_id, now=now)
        current = await _bound_role(connection, account_id)
        who = f"{channel.value} account {external_id}"
        if current is not None:
            return _same_opd_or_error(current, opd_id, who)
        values: dict[str, Any] = {"channel_account_id": account_id, "phone_e164": None}
        details = {"channel": channel.value, "external_id": external_id}
    else:
        assert phone_e164 is not None
        if _E164.fullmatch(phone_e164) is None:
            raise RoleError(f"{phone_e164!r} is not a phone number in E.164 form (+62...)")
        roles = await _current_roles_for_phone(connection, phone_e164)
        if roles:
            same = [role for role in roles if role.opd_id == opd_id]
            return _same_opd_or_error((same or roles)[0], opd_id, f"phone {phone_e164}")
        values = {"channel_account_id": None, "phone_e164": phone_e164}
        details = {"phone": phone_e164}
    try:
        async with connection.begin_nested():
            result = await connection.execute(
                _INSERT_PIC,
                {
                    **values,
                    "opd_id": opd_id,
                    "appointed_by": str(actor),
                    "appointed_at": now,
                },
            )
    except IntegrityError:
        raise RoleError(
            "the account was appointed by somebody else at the same time; list the PICs "
            "and try again"
        ) from None
    pic_id = _new_id(result)
    await audit.record(
        connection,
        actor,
        "pic.appoint",
        record_type="pic",
        record_id=pic_id,
        opd_id=opd_id,
        now=now,
        details={**details, "opd_code": opd.code},
    )
    return pic_id


def _same_opd_or_error(current: PicRole, opd_id: int, who: str) -> int:
    if current.opd_id == opd_id:
        return current.pic_id
    raise RoleError(
        f"{who} is already PIC of {current.opd_code} ({current.opd_name}) as PIC "
        f"{current.pic_id}; remove that appointment first (a PIC serves one OPD)"
    )


async def _current_roles_for_phone(connection: AsyncConnection, phone_e164: str) -> list[PicRole]:
    """Current appointments made for this phone, or held by an account proving it."""
    statement = (
        select(*_ROLE_COLUMNS)
        .join(Opd, Opd.id == Pic.opd_id)
        .outerjoin(ChannelAccount, ChannelAccount.id == Pic.channel_account_id)
        .outerjoin(Asn, Asn.channel_account_id == ChannelAccount.id)
        .where(
            Pic.removed_at.is_(None),
            or_(
                Pic.phone_e164 == phone_e164,
                (ChannelAccount.channel == Channel.WHATSAPP)
                & (ChannelAccount.external_id == phone_e164.removeprefix("+")),
                Asn.phone_e164 == phone_e164,
            ),
        )
        .order_by(Pic.id)
    )
    return [PicRole(*row) for row in await connection.execute(statement)]


async def remove(
    connection: AsyncConnection, *, pic_id: int, actor: Actor, now: datetime
) -> PicRole:
    """End the appointment `pic_id` (the row stays for the audit trail); returns what it was.

    Raises RoleError when there is no such PIC or it was removed already.
    """
    statement = (
        select(*_ROLE_COLUMNS, Pic.removed_at)
        .join(Opd, Opd.id == Pic.opd_id)
        .where(Pic.id == pic_id)
    )
    row = (await connection.execute(statement)).first()
    if row is None:
        raise RoleError(f"there is no PIC with id {pic_id}")
    if row.removed_at is not None:
        raise RoleError(f"PIC {pic_id} was already removed on {row.removed_at:%Y-%m-%d %H:%M} UTC")
    role = PicRole(*row[:4])
    await connection.execute(
        update(Pic)
        .where(Pic.id == pic_id, Pic.removed_at.is_(None))
        .values(removed_at=now, removed_by=str(actor))
    )
    await audit.record(
        connection,
        actor,
        "pic.remove",
        record_type="pic",
        record_id=pic_id,
        opd_id=role.opd_id,
        now=now,
        details={"opd_code": role.opd_code},
    )
    return role


async def list_pics(connection: AsyncConnection, *, opd_id: int | None = None) -> list[PicListing]:
    """Current appointments, by OPD code then pic id; only `opd_id`'s when given."""
    statement = (
        select(
            Pic.id,
            Opd.code,
            Opd.name,
            ChannelAccount.channel,
            ChannelAccount.external_id,
            Pic.phone_e164,
            Asn.full_name,
            ChannelAccount.display_name,
            Pic.appointed_at,
            Pic.appointed_by,
        )
        .join(Opd, Opd.id == Pic.opd_id)
        .outerjoin(ChannelAccount, ChannelAccount.id == Pic.channel_account_id)
        .outerjoin(Asn, Asn.channel_account_id == ChannelAccount.id)
        .where(Pic.removed_at.is_(None))
        .order_by(Opd.code, Pic.id)
    )
    if opd_id is not None:
        statement = statement.where(Pic.opd_id == opd_id)
    return [
        PicListing(
            pic_id=row.id,
            opd_code=row.code,
            opd_name=row.name,
            channel=row.channel,
            external_id=row.external_id,
            phone_e164=row.phone_e164,
            display_name=row.full_name or row.display_name,
            appointed_at=row.appointed_at,
            appointed_by=row.appointed_by,
        )
        for row in await connection.execute(statement)
    ]


async def create_invite(
    connection: AsyncConnection,
    *,
    opd_id: int,
    actor: Actor,
    now: datetime,
    valid_for: timedelta = timedelta(days=7),
) -> str:
    """A new one-time code ("PIC-" and 8 characters of `INVITE_ALPHABET`, 40 random bits).

    Whoever redeems it before `now + valid_for` becomes PIC of the OPD. The
    audit entry "invite.create" names the invite id, not the code.
    Raises RoleError for an unknown or inactive OPD, ValueError for a
    non-positive `valid_for`.
    """
    if valid_for <= timedelta(0):
        raise ValueError("an invite must be valid for some time")
    opd = await _active_opd(connection, opd_id)
    expires_at = now + valid_for
    for _attempt in range(5):
        code = INVITE_PREFIX + "".join(
            secrets.choice(INVITE_ALPHABET) for _ in range(INVITE_LENGTH)
        )
        statement = (
            insert_for(connection.dialect.name)(InviteCode)
            .values(
                code=code,
                opd_id=opd_id,
                created_by=str(actor),
                created_at=now,
                expires_at=expires_at,
            )
            .on_conflict_do_nothing(index_elements=["code"])
        )
        result = await connection.execute(statement)
        if result.rowcount:
            break
    else:  # five collisions in a space of 2**40: something else is wrong
        raise RuntimeError("could not draw an unused invite code")
    invite_id = (
        await connection.execute(select(InviteCode.id).where(InviteCode.code == code))
    ).scalar_one()
    await audit.record(
        connection,
        actor,
        "invite.create",
        record_type="invite_code",
        record_id=invite_id,
        opd_id=opd_id,
        now=now,
        details={"opd_code": opd.code, "expires_at": expires_at.isoformat(timespec="seconds")},
    )
    return code


def normalize_invite_code(typed: str) -> str | None:
    """The stored form ("PIC-XXXXXXXX") of a typed code, or None when it cannot be one.

    Case, spaces, hyphens and underscores are ignored and the "PIC" prefix is
    optional: "pic-abcd 2345", "ABCD2345" and "PIC_ABCD2345" are the same code.
    """
    compact = _TYPED_NOISE.sub("", typed).upper()
    if len(compact) == len("PIC") + INVITE_LENGTH and compact.startswith("PIC"):
        compact = compact[len("PIC") :]
    if _INVITE_BODY.fullmatch(compact) is None:
        return None
    return INVITE_PREFIX + compact


async def redeem_invite(
    connection: AsyncConnection, *, code: str, account_id: int, now: datetime
) -> PicRole | InviteProblem:
    """Make the account PIC of the invite's OPD, or say why not.

    `code` is as typed (see `normalize_invite_code`) or as the Telegram deep
    link passes it. On success the code is marked used by this account, a
    Pic row is created with `appointed_by` "invite:<invite id>", and the
    audit entry "invite.redeem" is written with the account as actor.

    Somebody who is already PIC of the invite's OPD gets their role back and
    the code is NOT used up: it was meant for somebody else, who can still
    redeem it. The account that redeemed a code gets its role back when it
    sends the code again (a repeated /start link), anyone else gets USED.

    Wrong codes (unknown, used, expired) are audited as "invite.failed"; after
    `MAX_FAILED_INVITES` of them within `INVITE_ATTEMPT_WINDOW` the account gets
    TOO_MANY_ATTEMPTS without the code being looked at.
    """
    failures = await connection.scalar(
        select(func.count())
        .select_from(AuditLog)
        .where(
            AuditLog.action == "invite.failed",
            AuditLog.actor_type == "account",
            AuditLog.actor == str(account_id),
            AuditLog.at > now - INVITE_ATTEMPT_WINDOW,
        )
    )
    if int(failures or 0) >= MAX_FAILED_INVITES:
        return InviteProblem.TOO_MANY_ATTEMPTS
    outcome = await _redeem(connection, code=code, account_id=account_id, now=now)
    if outcome in (InviteProblem.UNKNOWN, InviteProblem.USED, InviteProblem.EXPIRED):
        await audit.record(
            connection,
            Actor("account", str(account_id)),
            "invite.failed",
            record_type="invite_code",
            record_id=None,
            opd_id=None,
            now=now,
            details={"problem": str(outcome)},
        )
    return outcome


async def _redeem(
    connection: AsyncConnection, *, code: str, account_id: int, now: datetime
) -> PicRole | InviteProblem:
    normalized = normalize_invite_code(code)
    if normalized is None:
        return InviteProblem.UNKNOWN
    statement = (
        select(
            InviteCode.id,
            InviteCode.opd_id,
            InviteCode.expires_at,
            InviteCode.used_at,
            Opd.name,
            Opd.code,
        )
        .join(Opd, Opd.id == InviteCode.opd_id)
        .where(InviteCode.code == normalized)
    )
    invite = (await connection.execute(statement)).first()
    if invite is None:
        return InviteProblem.UNKNOWN
    current = await pic_for_account(connection, account_id, now=now)
    if current is not None and current.opd_id == invite.opd_id:
        return current
    if invite.used_at is not None:
        return InviteProblem.USED
    if now >= invite.expires_at:
        return InviteProblem.EXPIRED
    if current is not None:
        return InviteProblem.ALREADY_PIC_ELSEWHERE
    used = await connection.execute(
        update(InviteCode)
        .where(InviteCode.id == invite.id, InviteCode.used_at.is_(None))
        .values(used_at=now, used_by_account_id=account_id)
    )
    if not used.rowcount:  # redeemed by somebody else a moment ago
        return InviteProblem.USED
    result = await connection.execute(
        _INSERT_PIC,
        {
            "opd_id": invite.opd_id,
            "channel_account_id": account_id,
            "phone_e164": None,
            "appointed_by": f"invite:{invite.id}",
            "appointed_at": now,
        },
    )
    pic_id = _new_id(result)
    await audit.record(
        connection,
        Actor("account", str(account_id)),
        "invite.redeem",
        record_type="invite_code",
        record_id=invite.id,
        opd_id=invite.opd_id,
        now=now,
        details={"pic_id": pic_id},
    )
    return PicRole(pic_id=pic_id, opd_id=invite.opd_id, opd_name=invite.name, opd_code=invite.code)


def invite_deep_link(bot_username: str, code: str) -> str:
    """The Telegram link that opens the bot and sends `/start <code>`.

    Telegram allows A-Z, a-z, 0-9, "_" and "-" in a start parameter (up to 64
    characters): invite codes fit as they are.
    """
    return f"https://t.me/{bot_username.strip().removeprefix('@')}?start={code}"


@dataclasses.dataclass(frozen=True, slots=True)
class _OpdRef:
    id: int
    code: str
    name: str


async def _active_opd(connection: AsyncConnection, opd_id: int) -> _OpdRef:
    statement = select(Opd.id, Opd.code, Opd.name, Opd.active).where(Opd.id == opd_id)
    row = (await connection.execute(statement)).first()
    if row is None:
        raise RoleError(f"there is no OPD with id {opd_id}")
    if not row.active:
        raise RoleError(f"OPD {row.code} ({row.name}) is inactive")
    return _OpdRef(row.id, row.code, row.name)


async def _account_id(
    connection: AsyncConnection, channel: Channel, external_id: str, *, now: datetime
) -> int:
    """The id of the channel account, created (language Indonesian) if it does not exist."""
    await connection.execute(
        insert_for(connection.dialect.name)(ChannelAccount)
        .values(
            channel=channel,
            external_id=external_id,
            language=Language.INDONESIAN,
            display_name=None,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["channel", "external_id"])
    )
    statement = select(ChannelAccount.id).where(
        ChannelAccount.channel == channel, ChannelAccount.external_id == external_id
    )
    return int((await connection.execute(statement)).scalar_one())


def _new_id(result: Any) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


async def remember_display_name(connection: AsyncConnection, account_id: int, name: str) -> None:
    """Keep the platform's profile name of an account that has none yet.

    An account created by an appointment (`appoint` by Telegram id) has no
    name until its person writes; a PIC's name is what others are told to
    contact. A name already there is left as it is (one indexed UPDATE that
    changes nothing).
    """
    await connection.execute(
        update(ChannelAccount)
        .where(ChannelAccount.id == account_id, ChannelAccount.display_name.is_(None))
        .values(display_name=name[:200])
    )
