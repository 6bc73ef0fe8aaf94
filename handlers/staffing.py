"""Nobody left without a person (PRODUCT 2, 4.7): who to contact for an OPD, and the
notices that reach the PICs, the administrators and the people who asked.

Wherever the bot tells someone to contact a PIC, `contact` names the OPD's
reachable PICs or says plainly that there is none; in that case the
administrators are told (`tell_admins_no_pic`, once per OPD per local day)
and the sentence says so, or says that no administrator is on the bot either.

Notices are rendered in each recipient's language and written to the outbox in
the caller's transaction under a dedupe key.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.vocabulary import Channel, Language, SponsorshipStatus, TicketAuthor
from handlers.context import Context
from handlers.i18n import Catalogs
from storage import admins
from storage.admins import Staff
from storage.models import ChannelAccount, Opd, Sponsorship
from storage.outbox import Notice, enqueue
from storage.worker_side import ERASED_ACCOUNT_PREFIX

#: Characters of a question quoted in a notice or a list (the whole text is in the chat).
QUOTE_CHARS = 300


def quote(text: str, limit: int = QUOTE_CHARS) -> str:
    """`text` cut to `limit` characters at a word, with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0] if " " in text[:limit] else text[:limit]
    return cut.rstrip() + "…"


def names_of(staff: list[Staff]) -> str | None:
    """The named people of `staff`, comma-separated; None when nobody has a name."""
    names = [person.name for person in staff if person.name]
    return ", ".join(names) if names else None


async def contact(ctx: Context, opd_id: int, opd_name: str, *, tell: bool = True) -> str:
    """One sentence: who to contact at the OPD, or that it has no PIC.

    Without a PIC, the administrators are told (`tell_admins_no_pic`) when
    `tell`, and the sentence says they were; `tell=False` (re-rendering a
    question) only reads. Without an administrator either, it says so.
    """
    staff = await admins.opd_staff(ctx.repo.connection, opd_id)
    if staff:
        names = names_of(staff)
        if names is None:
            return ctx.t("contact.pic_unnamed", opd=opd_name)
        return ctx.t("contact.pic", opd=opd_name, names=names)
    if tell:
        told = await tell_admins_no_pic(
            ctx.repo.connection, ctx.notices.catalogs, opd_id, now=ctx.now, today=ctx.today
        )
    else:
        told = bool(await admins.administrators(ctx.repo.connection))
    return ctx.t("contact.no_pic" if told else "contact.no_pic_no_admin", opd=opd_name)


async def tell_if_unstaffed(ctx: Context, opd_id: int) -> None:
    """Tell the administrators when the OPD has no reachable PIC (someone needed one)."""
    if not await admins.opd_staff(ctx.repo.connection, opd_id):
        await tell_admins_no_pic(
            ctx.repo.connection, ctx.notices.catalogs, opd_id, now=ctx.now, today=ctx.today
        )


async def queued_text(
    ctx: Context, name: str, opd_id: int, opd_name: str, *, waiting_key: str = "enroll.done"
) -> str:
    """What the ASN reads when an enrollment enters the OPD's queue (new, or corrected
    with `waiting_key` "fix.done").

    With a reachable PIC it waits for them (`waiting_key`); without one it says
    so plainly and the administrators are told (or that there is no
    administrator on the bot).
    """
    # One statement in the usual cases (a PIC; or no PIC and everybody told today).
    state = await admins.no_pic_notice_state(
        ctx.repo.connection, opd_id, dedupe_prefix=no_pic_dedupe_prefix(opd_id, ctx.today)
    )
    if state.has_pic:
        return ctx.t(waiting_key, name=name, opd=opd_name)
    told = await tell_admins_no_pic(
        ctx.repo.connection,
        ctx.notices.catalogs,
        opd_id,
        now=ctx.now,
        today=ctx.today,
        state=state,
    )
    key = "enroll.done_no_pic" if told else "enroll.done_no_pic_no_admin"
    return ctx.t(key, name=name, opd=opd_name)


def no_pic_dedupe_prefix(opd_id: int, today: date) -> str:
    """The no-PIC notice's dedupe key without the administrator's `Staff.key`."""
    return f"no_pic:{opd_id}:{today.isoformat()}:"


async def tell_admins_no_pic(
    connection: AsyncConnection,
    catalogs: Catalogs,
    opd_id: int,
    *,
    now: datetime,
    today: date,
    state: admins.NoPicNoticeState | None = None,
) -> bool:
    """Tell every administrator that the OPD has no PIC and someone needed one.

    Once per OPD per local day and administrator (dedupe key). False when there
    is no administrator account to tell. When every current administrator was
    told today already (their rows exist: `state`, read here when not given),
    nothing else is read or written: every enrollment of an OPD without PIC
    passes here, and only the day's first one tells anybody.
    """
    if state is None:
        state = await admins.no_pic_notice_state(
            connection, opd_id, dedupe_prefix=no_pic_dedupe_prefix(opd_id, today)
        )
    if not state.administrators:
        return False
    if not state.untold:
        return True
    staff = await admins.administrators(connection)
    if not staff:  # all removed since `state` was read (another process, PostgreSQL)
        return False
    opd = (await connection.execute(select(Opd.code, Opd.name).where(Opd.id == opd_id))).one()
    waiting = int(
        await connection.scalar(
            select(func.count())
            .select_from(Sponsorship)
            .where(
                Sponsorship.opd_id == opd_id,
                Sponsorship.status == SponsorshipStatus.WAITING_FOR_PIC,
            )
        )
        or 0
    )
    for admin in staff:
        t = catalogs.translator(admin.language)
        params = {"opd": opd.name, "code": opd.code, "waiting": waiting}
        await enqueue(
            connection,
            Notice(
                dedupe_key=no_pic_dedupe_prefix(opd_id, today) + admin.key,
                channel=admin.channel,
                recipient=admin.external_id,
                kind="no_pic",
                body=t("notice.no_pic", **params),
                template="admin_no_pic",
                params=params,
            ),
            now=now,
        )
    return True


async def tell_new_question(
    connection: AsyncConnection,
    catalogs: Catalogs,
    *,
    ticket_id: int,
    opd_name: str,
    asker: str,
    text: str,
    recipients: list[Staff],
    now: datetime,
) -> None:
    """Tell the OPD's PICs (or the administrators) that a question arrived."""
    for person in recipients:
        t = catalogs.translator(person.language)
        params = {"number": ticket_id, "asker": asker, "opd": opd_name}
        await enqueue(
            connection,
            Notice(
                dedupe_key=f"ticket:new:{ticket_id}:{person.key}",
                channel=person.channel,
                recipient=person.external_id,
                kind="ticket_new",
                body=t(
                    "notice.ticket.new_admin"
                    if person.key.startswith(admins.ADMIN_KEY_PREFIX)
                    else "notice.ticket.new",
                    question=quote(text),
                    **params,
                ),
                template="ticket_new",
                params=params,
            ),
            now=now,
        )


async def _asker(
    connection: AsyncConnection, account_id: int
) -> tuple[Channel, str, Language] | None:
    """The asker's channel, id there and language; None for an erased account."""
    row = (
        await connection.execute(
            select(
                ChannelAccount.channel, ChannelAccount.external_id, ChannelAccount.language
            ).where(ChannelAccount.id == account_id)
        )
    ).first()
    if row is None or row.external_id.startswith(ERASED_ACCOUNT_PREFIX):
        return None
    return Channel(row.channel), row.external_id, Language(row.language)


async def tell_answer(
    connection: AsyncConnection,
    catalogs: Catalogs,
    *,
    asker_account_id: int,
    message_id: int,
    author: TicketAuthor,
    opd_name: str,
    question: str,
    text: str,
    closed: bool,
    now: datetime,
) -> None:
    """The answer to the person who asked, on their own channel."""
    asker = await _asker(connection, asker_account_id)
    if asker is None:
        return
    channel, recipient, language = asker
    t = catalogs.translator(language)
    who = t("ticket.by_admin") if author is TicketAuthor.ADMIN else t("ticket.by_pic", opd=opd_name)
    params = {"who": who, "answer": text}
    body = t("notice.ticket.answer", question=quote(question), **params)
    body += "\n\n" + t("notice.ticket.answer_closed" if closed else "notice.ticket.answer_open")
    await enqueue(
        connection,
        Notice(
            dedupe_key=f"ticket:answer:{message_id}",
            channel=channel,
            recipient=recipient,
            kind="ticket_answer",
            body=body,
            template="ticket_answer",
            params=params,
        ),
        now=now,
    )


async def tell_closed(
    connection: AsyncConnection,
    catalogs: Catalogs,
    *,
    ticket_id: int,
    asker_account_id: int,
    opd_name: str,
    question: str,
    now: datetime,
) -> None:
    """Tell the person who asked that their question was closed."""
    asker = await _asker(connection, asker_account_id)
    if asker is None:
        return
    channel, recipient, language = asker
    t = catalogs.translator(language)
    params = {"opd": opd_name}
    await enqueue(
        connection,
        Notice(
            dedupe_key=f"ticket:closed:{ticket_id}",
            channel=channel,
            recipient=recipient,
            kind="ticket_closed",
            body=t("notice.ticket.closed", question=quote(question, 120), **params),
            template="ticket_closed",
            params=params,
        ),
        now=now,
    )
