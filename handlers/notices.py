"""Proactive messages: what they say and to whom, planned into the outbox (SPEC 5).

Each notice is rendered in the recipient's language when it is planned and
written with `storage.outbox.enqueue` in the caller's transaction, under a
dedupe key that makes planning it twice harmless. The dispatcher sends it
later, outside quiet hours, at the platform's rate.

Workers are told over WhatsApp (SPEC 4.6), which arrives with its own channel:
until then `worker_channel` is None and no worker notice is planned; with it
set, the worker's notice goes to their phone number on that channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.months import add_months
from domain.vocabulary import Channel, Language, PaymentStatus
from handlers.i18n import Catalogs
from storage.dues_queries import SPONSORSHIP_REMINDER_KINDS, delete_pending, reminder_key
from storage.models import Asn, ChannelAccount, Opd, Payment, Sponsorship, Worker
from storage.outbox import Notice, enqueue

_RECIPIENTS = (
    select(
        Sponsorship.id,
        Sponsorship.kpj,
        Sponsorship.return_reason,
        Sponsorship.correction_count,
        Worker.full_name,
        Worker.nik_masked,
        Worker.phone_e164,
        Opd.name,
        ChannelAccount.channel,
        ChannelAccount.external_id,
        ChannelAccount.language,
    )
    .join(Worker, Worker.id == Sponsorship.worker_id)
    .join(Asn, Asn.id == Sponsorship.asn_id)
    .join(Opd, Opd.id == Sponsorship.opd_id)
    .join(ChannelAccount, ChannelAccount.id == Asn.channel_account_id)
)


class Notices:
    """Implements `storage.workbench.NoticePlanner`."""

    def __init__(
        self,
        catalogs: Catalogs,
        *,
        worker_channel: Channel | None = None,
        worker_language: Language = Language.INDONESIAN,
    ) -> None:
        self._catalogs = catalogs
        self._worker_channel = worker_channel
        self._worker_language = worker_language

    async def enrollment_returned(
        self, connection: AsyncConnection, sponsorship_id: int, *, now: datetime
    ) -> None:
        """Tell the ASN an enrollment came back with the PIC's reason."""
        row = (await connection.execute(_RECIPIENTS.where(Sponsorship.id == sponsorship_id))).one()
        t = self._catalogs.translator(Language(row.language))
        body = t(
            "notice.returned",
            name=row.full_name,
            nik=row.nik_masked,
            opd=row.name,
            reason=row.return_reason or "-",
        )
        await enqueue(
            connection,
            Notice(
                # One per return: a corrected enrollment returned again is told again.
                dedupe_key=f"returned:{sponsorship_id}:{row.correction_count}",
                channel=Channel(row.channel),
                recipient=row.external_id,
                kind="returned",
                body=body,
                template="enrollment_returned",
                params={"name": row.full_name, "reason": row.return_reason or "-"},
            ),
            now=now,
        )

    async def cards_ready(
        self, connection: AsyncConnection, sponsorship_ids: Sequence[int], *, now: datetime
    ) -> None:
        """Card-ready notices to the ASN (and the worker, where a worker channel exists)."""
        if not sponsorship_ids:
            return
        rows = await connection.execute(_RECIPIENTS.where(Sponsorship.id.in_(sponsorship_ids)))
        for row in rows:
            t = self._catalogs.translator(Language(row.language))
            params = {"name": row.full_name, "kpj": row.kpj, "opd": row.name}
            await enqueue(
                connection,
                Notice(
                    dedupe_key=f"card_ready:asn:{row.id}",
                    channel=Channel(row.channel),
                    recipient=row.external_id,
                    kind="card_ready",
                    body=t("notice.card_ready.asn", **params),
                    template="card_ready_sponsor",
                    params=params,
                ),
                now=now,
            )
            if self._worker_channel is not None and row.phone_e164:
                wt = self._catalogs.translator(self._worker_language)
                await enqueue(
                    connection,
                    Notice(
                        dedupe_key=f"card_ready:worker:{row.id}",
                        channel=self._worker_channel,
                        recipient=row.phone_e164.lstrip("+"),
                        kind="card_ready",
                        body=wt("notice.card_ready.worker", **params),
                        template="card_ready_worker",
                        params=params,
                    ),
                    now=now,
                )

    async def payment_recorded(
        self, connection: AsyncConnection, sponsorship_id: int, months: Sequence[date]
    ) -> None:
        """A recorded payment cancels the still-unsent reminders of its months (SPEC 5)."""
        keys = [
            reminder_key(kind, sponsorship_id, month)
            for month in months
            for kind in SPONSORSHIP_REMINDER_KINDS
        ]
        await delete_pending(connection, keys)

    async def payment_decided(
        self, connection: AsyncConnection, payment_id: int, *, now: datetime
    ) -> None:
        """Tell the payer the PIC confirmed or rejected their payment (with the reason)."""
        row = (
            await connection.execute(
                select(
                    Payment.status,
                    Payment.first_month,
                    Payment.months,
                    Payment.reject_reason,
                    Worker.full_name,
                    ChannelAccount.channel,
                    ChannelAccount.external_id,
                    ChannelAccount.language,
                )
                .join(Sponsorship, Sponsorship.id == Payment.sponsorship_id)
                .join(Worker, Worker.id == Sponsorship.worker_id)
                .join(Asn, Asn.id == Sponsorship.asn_id)
                .join(ChannelAccount, ChannelAccount.id == Asn.channel_account_id)
                .where(Payment.id == payment_id)
            )
        ).one()
        t = self._catalogs.translator(Language(row.language))
        last = add_months(row.first_month, row.months - 1)
        params = {
            "name": row.full_name,
            "first": t.month(row.first_month),
            "last": t.month(last),
            "reason": row.reject_reason or "-",
        }
        status = PaymentStatus(row.status)
        await enqueue(
            connection,
            Notice(
                dedupe_key=f"payment:{payment_id}:{status.value}",
                channel=Channel(row.channel),
                recipient=row.external_id,
                kind=f"payment_{status.value}",
                body=t(f"notice.payment.{status.value}", **params),
                template=f"payment_{status.value}",
                params=params,
            ),
            now=now,
        )
