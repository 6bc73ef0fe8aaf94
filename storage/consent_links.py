"""Telegram consent links (PRODUCT 4.6): t.me/<bot>?start=c_<token>, forwarded by the ASN.

A worker without WhatsApp opens the link the ASN forwarded and answers the same
consent question. The token is 192 random bits (`secrets.token_urlsafe`), shown
once to the ASN and stored only as its SHA-256: whoever reads the database
cannot make a working link, and a guessed payload finds nothing. A link serves
one sponsorship, works until it expires (PROGRAM_CONSENT_LINK_DAYS) and only
while the worker has not answered; the ASN may make another at any time
(earlier links keep working until they expire).

Limit: Telegram cannot tell who opened a link; holding the link is what lets
someone answer. Only the sponsoring ASN's own account is refused (an ASN cannot
consent for the worker by opening the link themselves).

No commit happens here; the caller owns the transaction.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import joinedload

from domain.vocabulary import ConsentMethod, WorkerConsent
from storage.models import Asn, ConsentLink, Sponsorship

#: The Telegram /start payload of a consent link: this prefix and the token
#: (Telegram allows 64 characters of A-Z, a-z, 0-9, "_" and "-"). Invite codes
#: ("PIC-XXXXXXXX") never start with it.
PAYLOAD_PREFIX = "c_"
_TOKEN_BYTES = 24


def token_hash(token: str) -> bytes:
    """What is stored of a token (SHA-256: the token is random, so no key is needed)."""
    return hashlib.sha256(token.encode("ascii", "replace")).digest()


def is_consent_payload(payload: str) -> bool:
    """Whether a /start payload is a consent link (else it may be an invite code)."""
    return payload.startswith(PAYLOAD_PREFIX)


@dataclasses.dataclass(slots=True, frozen=True)
class NewLink:
    """A link just made: its /start payload (shown once) and when it stops working."""

    payload: str
    expires_at: datetime


# Built once, their values as execution parameters: building a statement per call
# costs more than running it (bench/).
_INSERT_LINK = insert(ConsentLink)
_MARK_REQUESTED = (
    update(Sponsorship)
    .where(
        Sponsorship.id == bindparam("marked_id"),
        Sponsorship.worker_consent.in_([WorkerConsent.NOT_REQUESTED, WorkerConsent.PENDING]),
    )
    .values(
        worker_consent=WorkerConsent.PENDING,
        consent_requested_via=bindparam("marked_via"),
        consent_requested_at=bindparam("marked_at"),
    )
)


async def create_link(
    connection: AsyncConnection,
    *,
    sponsorship_id: int,
    account_id: int,
    now: datetime,
    ttl: timedelta,
    requested_already: bool = False,
) -> NewLink:
    """A new link for the sponsorship; the enrollment's consent becomes "asked by link".

    A consent still not requested becomes pending; one pending on WhatsApp
    stays pending, now "asked by link" (the latest way shown to the PIC).
    `requested_already`: the caller wrote the enrollment so already (a new one, written
    pending and asked by link with its row), and it is left as it is.
    """
    token = secrets.token_urlsafe(_TOKEN_BYTES)
    expires_at = now + ttl
    await connection.execute(
        _INSERT_LINK,
        {
            "sponsorship_id": sponsorship_id,
            "token_hash": token_hash(token),
            "created_by_account_id": account_id,
            "created_at": now,
            "expires_at": expires_at,
        },
    )
    if not requested_already:
        await mark_requested(
            connection, sponsorship_id=sponsorship_id, via=ConsentMethod.TELEGRAM_LINK, now=now
        )
    return NewLink(PAYLOAD_PREFIX + token, expires_at)


async def mark_requested(
    connection: AsyncConnection, *, sponsorship_id: int, via: ConsentMethod, now: datetime
) -> None:
    """Record that the worker was asked (by link or printed form), unless they answered."""
    await connection.execute(
        _MARK_REQUESTED, {"marked_id": sponsorship_id, "marked_via": via, "marked_at": now}
    )


class LinkProblem(enum.StrEnum):
    #: No such token (mistyped, cut off, or never issued).
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    #: The worker answered already (through this link or another way).
    ANSWERED = "answered"
    #: The enrollment ended (refused, erased, stopped).
    ENDED = "ended"
    #: The sponsoring ASN opened their own link.
    OWN_LINK = "own_link"


@dataclasses.dataclass(slots=True, frozen=True)
class OpenLink:
    """A link that may be answered: its id and the enrollment (with worker) and sponsor."""

    link_id: int
    sponsorship: Sponsorship
    asn_name: str


async def open_link(
    session: AsyncSession,
    *,
    payload: str | None = None,
    link_id: int | None = None,
    account_id: int,
    now: datetime,
) -> OpenLink | LinkProblem:
    """The link of a /start payload (or, when answering, of its id), if it may be answered now."""
    query = select(ConsentLink)
    if payload is not None:
        if not is_consent_payload(payload):
            return LinkProblem.UNKNOWN
        query = query.where(ConsentLink.token_hash == token_hash(payload[len(PAYLOAD_PREFIX) :]))
    else:
        query = query.where(ConsentLink.id == link_id)
    link = (await session.execute(query)).scalar_one_or_none()
    if link is None:
        return LinkProblem.UNKNOWN
    sponsorship = (
        await session.execute(
            select(Sponsorship)
            .options(joinedload(Sponsorship.worker))
            .where(Sponsorship.id == link.sponsorship_id)
        )
    ).scalar_one()
    asn = await session.get(Asn, sponsorship.asn_id)
    if asn is not None and asn.channel_account_id == account_id:
        return LinkProblem.OWN_LINK
    if sponsorship.worker_consent in (WorkerConsent.GIVEN, WorkerConsent.REFUSED):
        return LinkProblem.ANSWERED
    if not sponsorship.status.is_open or sponsorship.worker.erased_at is not None:
        return LinkProblem.ENDED
    if link.expires_at <= now:
        return LinkProblem.EXPIRED
    return OpenLink(link.id, sponsorship, asn.full_name if asn is not None else "-")


async def mark_used(connection: AsyncConnection, link_id: int, now: datetime) -> None:
    """The worker answered through this link."""
    await connection.execute(
        update(ConsentLink).where(ConsentLink.id == link_id).values(used_at=now)
    )
