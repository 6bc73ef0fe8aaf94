"""Who may use the web workbench (issue 13): program leaders, one-time sign-in links and
server-side sessions.

A sign-in link carries 256 random bits; only their SHA-256 is stored, so the
table leaks nothing usable. A link works once, for `LINK_TTL`, and is bound to a
chat account (PIC, leader, or an administrator's chat account) or to the login
that ran `sertakan web link --admin`. Using it opens a session: another random
token, also stored hashed, that the browser keeps in an HttpOnly cookie.

The role is never trusted from the link or the session alone: every request
derives it again from the account (`principal_role`), so a PIC removed or moved
to another OPD loses the old scope at once, as in the chat.

Every function works on the caller's connection and never commits.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import zlib
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.vocabulary import Channel
from storage import appointments, audit
from storage.admins import admin_id_for_account
from storage.audit import Actor
from storage.models import (
    ChannelAccount,
    ProgramLeader,
    WebSession,
    WebSignInAttempt,
    WebSignInLink,
)
from storage.roles import PicRole, pic_for_account

#: How long a sign-in link works (issue 13: ten minutes).
LINK_TTL = timedelta(minutes=10)
#: A session's last-seen time is written at most this often (not on every request).
TOUCH_EVERY = timedelta(minutes=1)
#: The window of the sign-in rate limit.
SIGN_IN_WINDOW = timedelta(minutes=1)


class WebRole(StrEnum):
    """What a signed-in person may do on the web."""

    #: One OPD's pages and actions, as in the chat.
    PIC = "pic"
    #: Every OPD's pages, read only.
    LEADER = "leader"
    #: Every OPD's pages, the batch actions and the outbox.
    ADMIN = "admin"


class LinkProblem(StrEnum):
    """Why a sign-in link opened no session."""

    UNKNOWN = "unknown"
    USED = "used"
    EXPIRED = "expired"
    #: The account holds no web role any more (removed since the link was made).
    NO_ROLE = "no_role"


@dataclasses.dataclass(slots=True, frozen=True)
class Principal:
    """Who a link or a session is for: a chat account, or an administrator's login."""

    role: WebRole
    channel_account_id: int | None = None
    admin_login: str | None = None


@dataclasses.dataclass(slots=True, frozen=True)
class Access:
    """What the signed-in person may do now, derived from their account on this request."""

    role: WebRole
    #: The actor written into the audit log for their actions.
    actor: Actor
    #: A PIC's appointment (their OPD); None for leaders and administrators.
    pic: PicRole | None
    #: Who they are, for the page header.
    name: str

    @property
    def read_only(self) -> bool:
        return self.role is WebRole.LEADER


@dataclasses.dataclass(slots=True, frozen=True)
class SessionInfo:
    id: int
    principal: Principal
    csrf_token: str
    language: str


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# -- program leaders ------------------------------------------------------------------


async def leader_id_for_account(connection: AsyncConnection, account_id: int) -> int | None:
    """The current leader appointment of this chat account, if any."""
    return await appointments.current_appointment(
        connection, appointments.PROGRAM_LEADER, account_id
    )


async def appoint_leader(
    connection: AsyncConnection, *, channel: Channel, external_id: str, actor: Actor, now: datetime
) -> tuple[int, bool]:
    """Make the chat account a program leader; (its leader id, whether new). Audited
    as "leader.appoint". The account row is created if the person never wrote yet."""
    return await appointments.appoint(
        connection,
        appointments.PROGRAM_LEADER,
        channel=channel,
        external_id=external_id,
        actor=actor,
        now=now,
    )


async def remove_leader(
    connection: AsyncConnection, *, leader_id: int, actor: Actor, now: datetime
) -> None:
    """End the leader appointment (the row stays); audited as "leader.remove". Their
    open web sessions stop working on their next request (the role is derived again)."""
    await appointments.end_appointment(
        connection, appointments.PROGRAM_LEADER, appointment_id=leader_id, actor=actor, now=now
    )


@dataclasses.dataclass(slots=True, frozen=True)
class LeaderListing:
    leader_id: int
    channel: Channel
    external_id: str
    display_name: str | None
    appointed_at: datetime
    appointed_by: str


async def list_leaders(connection: AsyncConnection) -> list[LeaderListing]:
    rows = await connection.execute(
        select(
            ProgramLeader.id,
            ChannelAccount.channel,
            ChannelAccount.external_id,
            ChannelAccount.display_name,
            ProgramLeader.appointed_at,
            ProgramLeader.appointed_by,
        )
        .join(ChannelAccount, ChannelAccount.id == ProgramLeader.channel_account_id)
        .where(ProgramLeader.removed_at.is_(None))
        .order_by(ProgramLeader.id)
    )
    return [LeaderListing(int(r[0]), Channel(r[1]), str(r[2]), r[3], r[4], str(r[5])) for r in rows]


# -- roles -----------------------------------------------------------------------------


async def account_principal(
    connection: AsyncConnection, account_id: int, *, now: datetime
) -> Principal | None:
    """The web role of a chat account: PIC first (their OPD's work), then program leader,
    then administrator; None when it holds none."""
    if await pic_for_account(connection, account_id, now=now) is not None:
        return Principal(WebRole.PIC, channel_account_id=account_id)
    if await leader_id_for_account(connection, account_id) is not None:
        return Principal(WebRole.LEADER, channel_account_id=account_id)
    if await admin_id_for_account(connection, account_id) is not None:
        return Principal(WebRole.ADMIN, channel_account_id=account_id)
    return None


async def principal_access(
    connection: AsyncConnection, principal: Principal, *, now: datetime
) -> Access | None:
    """What `principal` may do now; None when the role behind it has ended."""
    if principal.admin_login is not None:
        return Access(
            WebRole.ADMIN, Actor.admin(principal.admin_login), None, principal.admin_login
        )
    account_id = principal.channel_account_id
    if account_id is None:
        return None
    name = str(
        await connection.scalar(
            select(ChannelAccount.display_name).where(ChannelAccount.id == account_id)
        )
        or f"#{account_id}"
    )
    if principal.role is WebRole.PIC:
        role = await pic_for_account(connection, account_id, now=now)
        if role is None:
            return None
        return Access(WebRole.PIC, Actor.pic(role.pic_id), role, name)
    if principal.role is WebRole.LEADER:
        leader = await leader_id_for_account(connection, account_id)
        if leader is None:
            return None
        return Access(WebRole.LEADER, Actor("leader", str(leader)), None, name)
    if await admin_id_for_account(connection, account_id) is None:
        return None
    # As an administrator acting in the chat is audited (`admin:<account id>`).
    return Access(WebRole.ADMIN, Actor.admin(str(account_id)), None, name)


# -- links and sessions ------------------------------------------------------------------


async def issue_link(
    connection: AsyncConnection, principal: Principal, *, actor: Actor, now: datetime
) -> str:
    """A new one-time sign-in token for `principal` (shown once; stored hashed).
    Audited as "web.link" (who asked, for whom)."""
    token = secrets.token_urlsafe(32)
    result = await connection.execute(
        insert(WebSignInLink).values(
            token_hash=token_hash(token),
            role=principal.role.value,
            channel_account_id=principal.channel_account_id,
            admin_login=principal.admin_login,
            created_at=now,
            expires_at=now + LINK_TTL,
        )
    )
    key = result.inserted_primary_key
    assert key is not None
    await audit.record(
        connection,
        actor,
        "web.link",
        record_type="web_sign_in_link",
        record_id=int(key[0]),
        opd_id=None,
        now=now,
        details={"role": principal.role.value},
    )
    return token


async def redeem_link(
    connection: AsyncConnection, token: str, *, now: datetime
) -> Principal | LinkProblem:
    """Use a sign-in token: it works once (a concurrent second use finds it used) and
    only before it expires; the account must still hold the role."""
    hashed = token_hash(token)
    row = (
        await connection.execute(
            select(
                WebSignInLink.id,
                WebSignInLink.role,
                WebSignInLink.channel_account_id,
                WebSignInLink.admin_login,
                WebSignInLink.expires_at,
                WebSignInLink.used_at,
            ).where(WebSignInLink.token_hash == hashed)
        )
    ).first()
    if row is None:
        return LinkProblem.UNKNOWN
    if row.used_at is not None:
        return LinkProblem.USED
    if row.expires_at <= now:
        return LinkProblem.EXPIRED
    claimed = await connection.execute(
        update(WebSignInLink)
        .where(WebSignInLink.id == row.id, WebSignInLink.used_at.is_(None))
        .values(used_at=now)
    )
    if not claimed.rowcount:
        return LinkProblem.USED
    principal = Principal(WebRole(row.role), row.channel_account_id, row.admin_login)
    if await principal_access(connection, principal, now=now) is None:
        return LinkProblem.NO_ROLE
    return principal


async def open_session(
    connection: AsyncConnection, principal: Principal, *, language: str, now: datetime
) -> str:
    """A new session for `principal`; returns the cookie's token (stored hashed)."""
    token = secrets.token_urlsafe(32)
    await connection.execute(
        insert(WebSession).values(
            token_hash=token_hash(token),
            role=principal.role.value,
            channel_account_id=principal.channel_account_id,
            admin_login=principal.admin_login,
            csrf_token=secrets.token_urlsafe(32),
            language=language,
            created_at=now,
            last_seen_at=now,
        )
    )
    return token


async def session_for(
    connection: AsyncConnection, token: str, *, now: datetime, idle: timedelta
) -> SessionInfo | None:
    """The live session of a cookie's token; None when unknown, ended or idle longer than
    `idle` (an idle one is ended). Refreshes its last-seen time."""
    found = (
        await connection.execute(
            select(
                WebSession.id,
                WebSession.role,
                WebSession.channel_account_id,
                WebSession.admin_login,
                WebSession.csrf_token,
                WebSession.language,
                WebSession.last_seen_at,
                WebSession.ended_at,
            ).where(WebSession.token_hash == token_hash(token))
        )
    ).first()
    if found is None or found.ended_at is not None:
        return None
    if now - found.last_seen_at > idle:
        await end_session(connection, found.id, now=now)
        return None
    if now - found.last_seen_at >= TOUCH_EVERY:
        await connection.execute(
            update(WebSession).where(WebSession.id == found.id).values(last_seen_at=now)
        )
    return SessionInfo(
        found.id,
        Principal(WebRole(found.role), found.channel_account_id, found.admin_login),
        found.csrf_token,
        found.language,
    )


async def end_session(connection: AsyncConnection, session_id: int, *, now: datetime) -> None:
    await connection.execute(
        update(WebSession)
        .where(WebSession.id == session_id, WebSession.ended_at.is_(None))
        .values(ended_at=now)
    )


async def set_language(connection: AsyncConnection, session_id: int, language: str) -> None:
    await connection.execute(
        update(WebSession).where(WebSession.id == session_id).values(language=language)
    )


# -- the sign-in rate limit ------------------------------------------------------------------


async def sign_in_allowed(
    connection: AsyncConnection, address: str, *, per_window: int, now: datetime
) -> bool:
    """Count a sign-in attempt from `address` unless it already made `per_window` in the
    last `SIGN_IN_WINDOW`; False (and nothing counted) when it has.

    Shared by every process on the database. Attempts of one address are serialised
    (PostgreSQL: a transaction-scoped advisory lock on it; SQLite: every transaction
    is BEGIN IMMEDIATE), so two processes cannot both let the last one through.
    Rows older than the window are deleted here, whoever's they are: the table holds
    one minute of attempts. Only the address's SHA-256 is kept.
    """
    hashed = token_hash(f"sign-in:{address}")
    if connection.dialect.name == "postgresql":
        key = (0x5E28 << 32) | zlib.crc32(hashed.encode())
        await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
    since = now - SIGN_IN_WINDOW
    # Rows another process is deleting are skipped (PostgreSQL), not waited for: two
    # prunes taking the same old rows in different orders could deadlock.
    stale = (
        select(WebSignInAttempt.id)
        .where(WebSignInAttempt.attempted_at <= since)
        .with_for_update(skip_locked=True)
    )
    await connection.execute(delete(WebSignInAttempt).where(WebSignInAttempt.id.in_(stale)))
    made = await connection.scalar(
        select(func.count())
        .select_from(WebSignInAttempt)
        .where(WebSignInAttempt.address_hash == hashed, WebSignInAttempt.attempted_at > since)
    )
    if int(made or 0) >= per_window:
        return False
    await connection.execute(insert(WebSignInAttempt).values(address_hash=hashed, attempted_at=now))
    return True
