"""The PIC's daily digest (PRODUCT 5): planned into the outbox on working days.

APScheduler calls `DigestPlanner.plan` at the configured local time on Monday
to Friday; the planner itself skips holidays (domain.workdays) and PICs with
nothing new since their previous digest. The dedupe key is per PIC per local
date, so a restart, a second run or several processes never plan it twice.
The dispatcher then sends it like any other notice (rate limits, quiet hours).

"Something new" means, since the PIC's previous digest: enrollments that
entered the verification queue (new or corrected), cards that became ready
(KPJ imported), payments recorded, a sponsor who came two months behind (the
day after the due date of their second unpaid month, `domain.dues.
arrears_reached_on`; derived from the payments, so nothing is stored to know
it was told), or a sponsorship that lapsed (three months; the reminder planner
makes it lapse before the digest's hour). The digest then gives the totals,
payments to confirm, the OPD's progress, and lists the sponsors two months or
more behind and the sponsorships lapsed since the previous digest.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.dues import AT_RISK_ARREARS, arrears_reached_on
from domain.local_time import local_date
from domain.tariff import DEFAULT_TARIFF, TariffTable
from domain.vocabulary import Channel, Language, PaymentStatus, SponsorshipStatus
from domain.workdays import WorkCalendar
from handlers.i18n import Catalogs
from scheduler.admin_digest import plan_admin_digests
from storage import payments, tickets, workbench
from storage.models import Asn, ChannelAccount, Opd, Outbox, Payment, Pic, Sponsorship, Worker
from storage.outbox import Notice, enqueue

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

#: Sponsors listed by name in a digest (the counts cover all; the PIC menu lists them all).
LISTED = 10


@dataclasses.dataclass(slots=True, frozen=True)
class _Recipient:
    pic_id: int
    opd_id: int
    opd_name: str
    channel: Channel
    external_id: str
    language: Language


class DigestPlanner:
    def __init__(
        self,
        database: AsyncEngine,
        catalogs: Catalogs,
        clock: Clock,
        *,
        timezone: ZoneInfo,
        calendar: WorkCalendar,
        send_at: time,
        tariff: TariffTable = DEFAULT_TARIFF,
    ) -> None:
        self._database = database
        self._catalogs = catalogs
        self._clock = clock
        self._timezone = timezone
        self._calendar = calendar
        self._send_at = send_at
        self._tariff = tariff

    async def plan(self) -> int:
        """Plan today's digests; returns how many were written (0 on a holiday)."""
        now = self._clock()
        local = now.astimezone(self._timezone)
        today = local.date()
        if not self._calendar.is_working_day(today):
            log.debug("digest: %s is not a working day", today)
            return 0
        if local.time() < self._send_at:
            return 0
        planned = 0
        async with self._database.begin() as connection:
            for recipient in await self._recipients(connection):
                if await self._plan_one(connection, recipient, today, now):
                    planned += 1
            planned += await plan_admin_digests(
                connection, self._catalogs, today=today, now=now, timezone=self._timezone
            )
        # A day with nothing planned is routine: DEBUG (SERTAKAN_LOG_LEVEL=DEBUG shows it).
        log.log(
            logging.INFO if planned else logging.DEBUG, "digest: %d planned for %s", planned, today
        )
        return planned

    async def _recipients(self, connection: AsyncConnection) -> list[_Recipient]:
        rows = await connection.execute(
            select(
                Pic.id,
                Pic.opd_id,
                Opd.name,
                ChannelAccount.channel,
                ChannelAccount.external_id,
                ChannelAccount.language,
            )
            .join(Opd, Opd.id == Pic.opd_id)
            .join(ChannelAccount, ChannelAccount.id == Pic.channel_account_id)
            .where(Pic.removed_at.is_(None))
            .order_by(Pic.id)
        )
        return [
            _Recipient(pic_id, opd_id, name, Channel(channel), external, Language(language))
            for pic_id, opd_id, name, channel, external, language in rows
        ]

    async def _plan_one(
        self, connection: AsyncConnection, recipient: _Recipient, today: date, now: datetime
    ) -> bool:
        key = f"digest:{recipient.pic_id}:{today.isoformat()}"
        since = await connection.scalar(
            select(func.max(Outbox.created_at)).where(
                Outbox.kind == "digest", Outbox.dedupe_key.startswith(f"digest:{recipient.pic_id}:")
            )
        )
        since = since or datetime(1970, 1, 1, tzinfo=UTC)
        if since.tzinfo is None:  # SQLite aggregate results skip the column type
            since = datetime.fromisoformat(str(since)).replace(tzinfo=UTC)
        opd = recipient.opd_id
        new_waiting = await _count(
            connection,
            Sponsorship.opd_id == opd,
            Sponsorship.status == SponsorshipStatus.WAITING_FOR_PIC,
            Sponsorship.status_changed_at > since,
        )
        new_cards = await _count(
            connection,
            Sponsorship.opd_id == opd,
            Sponsorship.status == SponsorshipStatus.ACTIVE,
            Sponsorship.kpj_imported_at > since,
        )
        new_payments = int(
            await connection.scalar(
                select(func.count())
                .select_from(Payment)
                .join(Sponsorship, Sponsorship.id == Payment.sponsorship_id)
                .where(
                    Sponsorship.opd_id == opd,
                    Payment.status == PaymentStatus.RECORDED,
                    Payment.recorded_at > since,
                )
            )
            or 0
        )
        arrears = await payments.in_arrears(
            connection, opd_id=opd, today=today, calendar=self._calendar, tariff=self._tariff
        )
        at_risk = [item for item in arrears if item.status.at_risk]
        paid = await payments.paid_months(connection, [item.sponsorship_id for item in at_risk])
        # The local day of the previous digest: a sponsor who came two months behind
        # on it or before was in that digest already.
        told_on = local_date(since, self._timezone)
        newly_at_risk = [
            item
            for item in at_risk
            if arrears_reached_on(
                item.status.next_month, paid[item.sponsorship_id], AT_RISK_ARREARS, self._calendar
            )
            > told_on
        ]
        lapsed = (
            await connection.execute(
                select(Worker.full_name, Asn.full_name)
                .select_from(Sponsorship)
                .join(Worker, Worker.id == Sponsorship.worker_id)
                .join(Asn, Asn.id == Sponsorship.asn_id)
                .where(
                    Sponsorship.opd_id == opd,
                    Sponsorship.status == SponsorshipStatus.LAPSED,
                    Sponsorship.status_changed_at > since,
                )
                .order_by(Sponsorship.status_changed_at, Sponsorship.id)
            )
        ).all()
        new_questions = await tickets.count_open(connection, opd, since=since)
        news = new_waiting or new_cards or new_payments or new_questions or newly_at_risk or lapsed
        if not news:
            return False
        _, payments_waiting = await payments.to_confirm(connection, opd_id=opd, limit=0)
        summary = await workbench.opd_summary(connection, opd)
        t = self._catalogs.translator(recipient.language)
        body = t(
            "digest.body",
            opd=recipient.opd_name,
            date=t.date(today),
            waiting=summary.count(SponsorshipStatus.WAITING_FOR_PIC),
            new_waiting=new_waiting,
            cards=summary.count(SponsorshipStatus.ACTIVE),
            new_cards=new_cards,
            sponsoring=summary.asn_sponsoring,
            registered=summary.asn_registered,
        )
        if payments_waiting:
            body += "\n" + t("digest.payments", count=payments_waiting, new=new_payments)
        open_questions = await tickets.count_open(connection, opd)
        if open_questions:
            body += "\n" + t("digest.questions", count=open_questions, new=new_questions)
        if arrears:
            body += "\n" + t("digest.arrears", count=len(arrears), at_risk=len(at_risk))
        if at_risk:
            new_ids = {item.sponsorship_id for item in newly_at_risk}
            lines = [t("digest.at_risk.title", count=len(at_risk), new=len(newly_at_risk))]
            # The news first, then the longest behind (in_arrears' order).
            for item in sorted(at_risk, key=lambda item: item.sponsorship_id not in new_ids)[
                :LISTED
            ]:
                line = t(
                    "pic.overdue.line",
                    name=item.worker_name,
                    sponsor=item.sponsor_name,
                    arrears=item.status.months_in_arrears,
                    month=t.month(item.status.next_month),
                )
                if item.sponsorship_id in new_ids:
                    line += " " + t("digest.new_mark")
                lines.append(line)
            if len(at_risk) > LISTED:
                lines.append(t("digest.at_risk.more", count=len(at_risk) - LISTED))
            body += "\n\n" + "\n".join(lines)
        if lapsed:
            lines = [t("digest.lapsed.title", count=len(lapsed))]
            lines += [
                t("digest.lapsed.line", name=name, sponsor=sponsor)
                for name, sponsor in lapsed[:LISTED]
            ]
            if len(lapsed) > LISTED:
                lines.append(t("digest.lapsed.more", count=len(lapsed) - LISTED))
            body += "\n\n" + "\n".join(lines)
        return await enqueue(
            connection,
            Notice(
                dedupe_key=key,
                channel=recipient.channel,
                recipient=recipient.external_id,
                kind="digest",
                body=body,
                template="pic_digest",
                params={
                    "opd": recipient.opd_name,
                    "waiting": summary.count(SponsorshipStatus.WAITING_FOR_PIC),
                    "cards": summary.count(SponsorshipStatus.ACTIVE),
                },
            ),
            now=now,
        )


async def _count(connection: AsyncConnection, *conditions: object) -> int:
    value = await connection.scalar(
        select(func.count()).select_from(Sponsorship).where(*conditions)  # type: ignore[arg-type]
    )
    return int(value or 0)
