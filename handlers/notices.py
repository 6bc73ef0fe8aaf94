"""Proactive messages: what they say and to whom, planned into the outbox (PRODUCT 5).

Each notice is rendered in the recipient's language when it is planned and
written with `storage.outbox.enqueue` in the caller's transaction, under a
dedupe key that makes planning it twice harmless. The dispatcher sends it
later, outside quiet hours, at the platform's rate.

Workers are told over WhatsApp (PRODUCT 4.6): with `worker_channel` set (the
composition root sets it when the WhatsApp channel is configured) the worker's
consent request and notices go to their phone number on that channel; without
it (console or Telegram only) no worker notice is planned and enrollments keep
`worker_consent = not_requested`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime, tzinfo
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.dues import protected_from
from domain.months import add_months
from domain.vocabulary import Channel, ConsentMethod, Language, PaymentStatus, WorkerConsent
from handlers.i18n import Catalogs, Translator
from storage.dues_queries import cancel_reminders, pics_by_opd
from storage.models import Asn, ChannelAccount, Opd, Payment, Sponsorship, Worker
from storage.outbox import Notice, enqueue
from storage.worker_side import Erasure

#: SERTAKAN_TIMEZONE's default, for planners built without settings (tests, scripts).
DEFAULT_TIMEZONE = ZoneInfo("Asia/Jakarta")

_RECIPIENTS = (
    select(
        Sponsorship.id,
        Sponsorship.kpj,
        Sponsorship.return_reason,
        Sponsorship.correction_count,
        Sponsorship.first_month,
        Sponsorship.worker_consent,
        Worker.full_name,
        Worker.nik_masked,
        Worker.phone_e164,
        Asn.full_name.label("asn_name"),
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
# Built once with bind parameters: constructing a statement per call cost more
# than running it (docs/BENCHMARKS.md, stepcost and "Kirim ke PIC in 7 statements").
_RECIPIENT = _RECIPIENTS.where(Sponsorship.id == bindparam("sponsorship_id"))
_RECIPIENTS_AMONG = _RECIPIENTS.where(
    Sponsorship.id.in_(bindparam("sponsorship_ids", expanding=True))
)
_OPD_OF = select(Sponsorship.opd_id).where(Sponsorship.id == bindparam("sponsorship_id"))
_ASKED_ON_WHATSAPP = (
    update(Sponsorship)
    .where(Sponsorship.id == bindparam("sponsorship_id"))
    .values(
        worker_consent=WorkerConsent.PENDING,
        consent_requested_via=ConsentMethod.WHATSAPP,
        consent_requested_at=bindparam("requested_at"),
    )
)


class Notices:
    """Implements `storage.workbench.NoticePlanner`."""

    def __init__(
        self,
        catalogs: Catalogs,
        *,
        worker_channel: Channel | None = None,
        worker_language: Language = Language.INDONESIAN,
        timezone: tzinfo = DEFAULT_TIMEZONE,
    ) -> None:
        """`timezone`: the province's (SERTAKAN_TIMEZONE), which decides what "today" is."""
        self._catalogs = catalogs
        self._worker_channel = worker_channel
        self._worker_language = worker_language
        self._timezone = timezone

    @property
    def catalogs(self) -> Catalogs:
        """The message catalogues (notices are rendered in each recipient's language)."""
        return self._catalogs

    @property
    def timezone(self) -> tzinfo:
        """The province's time zone, which decides what "today" is."""
        return self._timezone

    @property
    def worker_channel(self) -> Channel | None:
        """The channel workers are told on (WhatsApp), or None when there is none."""
        return self._worker_channel

    def _worker_recipient(self, phone_e164: str) -> str:
        # WhatsApp addresses a person by the number without "+" (their wa_id).
        return phone_e164.lstrip("+")

    def asks_for_consent(self, phone_e164: str | None) -> bool:
        """Whether `consent_request` plans a request for a worker with this phone."""
        return self._worker_channel is not None and bool(phone_e164)

    async def consent_request(
        self, connection: AsyncConnection, sponsorship_id: int, *, now: datetime
    ) -> bool:
        """Ask the worker to agree to their enrollment ("YA" / "TIDAK", PRODUCT 4.6).

        Planned only with a worker channel and a worker phone; the enrollment's
        `worker_consent` becomes pending. Returns whether a request was planned.
        """
        if self._worker_channel is None:
            return False
        row = (await connection.execute(_RECIPIENT, {"sponsorship_id": sponsorship_id})).one()
        if not self.asks_for_consent(row.phone_e164):
            return False
        t = self._catalogs.translator(self._worker_language)
        params = {
            "worker": row.full_name,
            "asn": row.asn_name,
            "program": t("program.name"),
            "sponsorship_id": sponsorship_id,
        }
        await enqueue(
            connection,
            Notice(
                dedupe_key=f"consent:worker:{sponsorship_id}",
                channel=self._worker_channel,
                recipient=self._worker_recipient(row.phone_e164),
                kind="consent_request",
                body=t("notice.consent_request", **params),
                template="consent_request",
                params=params,
            ),
            now=now,
        )
        await connection.execute(
            _ASKED_ON_WHATSAPP, {"sponsorship_id": sponsorship_id, "requested_at": now}
        )
        return True

    async def consent_answered(
        self, connection: AsyncConnection, sponsorship_id: int, *, granted: bool, now: datetime
    ) -> None:
        """Tell the ASN what the worker answered (a refusal ended the enrollment)."""
        row = (await connection.execute(_RECIPIENT, {"sponsorship_id": sponsorship_id})).one()
        t = self._catalogs.translator(Language(row.language))
        answer = "given" if granted else "refused"
        params = {"name": row.full_name, "answer": t(f"consent.{answer}")}
        await enqueue(
            connection,
            Notice(
                dedupe_key=f"consent:answer:{sponsorship_id}",
                channel=Channel(row.channel),
                recipient=row.external_id,
                kind="consent_answered",
                body=t(f"notice.consent_{answer}", name=row.full_name),
                template="consent_answered",
                params=params,
            ),
            now=now,
        )

    async def worker_erased(
        self, connection: AsyncConnection, erasure: Erasure, *, now: datetime
    ) -> None:
        """Tell the ASN and the OPD's PICs that a worker had their data erased (PRODUCT 4.6).

        The notice names no one (the name is what was erased): the worker is
        "the worker enrolled on <date>" with the enrollment's KPJ, which the
        PIC needs to report the end to BPJS.
        """
        pics = await pics_by_opd(connection)
        for enrollment in erasure.enrollments:
            if not enrollment.ended:
                continue
            asn = (
                await connection.execute(
                    select(
                        ChannelAccount.channel, ChannelAccount.external_id, ChannelAccount.language
                    )
                    .join(Asn, Asn.channel_account_id == ChannelAccount.id)
                    .where(Asn.id == enrollment.asn_id)
                )
            ).one()
            # Only the PICs report the end to BPJS: the ASN's copy asks nothing of them.
            recipients = [
                (
                    f"asn:{enrollment.asn_id}",
                    "notice.worker_erased",
                    asn.channel,
                    asn.external_id,
                    asn.language,
                )
            ] + [
                (
                    f"pic:{pic.pic_id}",
                    "notice.worker_erased_pic",
                    pic.channel,
                    pic.recipient,
                    pic.language,
                )
                for pic in pics.get(enrollment.opd_id, [])
            ]
            for who, body_key, channel, recipient, language in recipients:
                t = self._catalogs.translator(Language(language))
                params = {
                    "name": t("notice.erased_worker", date=t.date(enrollment.enrolled_on)),
                    "kpj": enrollment.kpj or "-",
                }
                await enqueue(
                    connection,
                    Notice(
                        dedupe_key=f"erased:{enrollment.sponsorship_id}:{who}",
                        channel=Channel(channel),
                        recipient=recipient,
                        kind="worker_erased",
                        body=t(body_key, **params),
                        template="worker_erased",
                        params=params,
                    ),
                    now=now,
                )

    async def enrollment_accepted(
        self, connection: AsyncConnection, sponsorship_id: int, *, now: datetime
    ) -> None:
        """Tell the ASN the PIC accepted an enrollment, and the worker too if they consented.

        The worker is told only over the worker channel, with a phone, and after
        answering "YA": someone who refused or was never asked hears nothing.
        An enrollment is accepted once (only from the queue), so the keys name
        the enrollment alone.
        """
        row = (await connection.execute(_RECIPIENT, {"sponsorship_id": sponsorship_id})).one()
        t = self._catalogs.translator(Language(row.language))
        params = {"name": row.full_name, "opd": row.name}
        await enqueue(
            connection,
            Notice(
                dedupe_key=f"accepted:asn:{sponsorship_id}",
                channel=Channel(row.channel),
                recipient=row.external_id,
                kind="accepted",
                body=t("notice.accepted.asn", nik=row.nik_masked, **params),
                template="enrollment_accepted",
                params=params,
            ),
            now=now,
        )
        consented = WorkerConsent(row.worker_consent) is WorkerConsent.GIVEN
        if self._worker_channel is None or not row.phone_e164 or not consented:
            return
        wt = self._catalogs.translator(self._worker_language)
        worker_params = {**params, "asn": row.asn_name}
        await enqueue(
            connection,
            Notice(
                dedupe_key=f"accepted:worker:{sponsorship_id}",
                channel=self._worker_channel,
                recipient=self._worker_recipient(row.phone_e164),
                kind="accepted",
                body=wt("notice.accepted.worker", **worker_params),
                template="enrollment_accepted_worker",
                params=worker_params,
            ),
            now=now,
        )

    async def enrollment_returned(
        self, connection: AsyncConnection, sponsorship_id: int, *, now: datetime
    ) -> None:
        """Tell the ASN an enrollment came back with the PIC's reason."""
        row = (await connection.execute(_RECIPIENT, {"sponsorship_id": sponsorship_id})).one()
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

    async def enrollment_resubmitted(
        self,
        connection: AsyncConnection,
        sponsorship_id: int,
        *,
        changed: Sequence[str],
        now: datetime,
    ) -> None:
        """Tell the OPD's PICs a returned enrollment was corrected and waits for them again,
        naming the fields the ASN changed (`enrollment.FIELDS` names; none: "nothing").

        One notice per PIC per round of correction (the key carries the count).
        """
        row = (await connection.execute(_RECIPIENT, {"sponsorship_id": sponsorship_id})).one()
        opd_id = await connection.scalar(_OPD_OF, {"sponsorship_id": sponsorship_id})
        for pic in (await pics_by_opd(connection)).get(int(opd_id or 0), []):
            t = self._catalogs.translator(pic.language)
            fields = ", ".join(t(f"enroll.field.{field}") for field in changed)
            params = {
                "name": row.full_name,
                "sponsor": row.asn_name,
                "changed": fields or t("notice.resubmitted.nothing_changed"),
            }
            await enqueue(
                connection,
                Notice(
                    dedupe_key=(
                        f"resubmitted:{sponsorship_id}:{row.correction_count}:pic:{pic.pic_id}"
                    ),
                    channel=pic.channel,
                    recipient=pic.recipient,
                    kind="resubmitted",
                    body=t("notice.resubmitted.pic", reason=row.return_reason or "-", **params),
                    template="enrollment_resubmitted",
                    params=params,
                ),
                now=now,
            )

    async def cards_ready(
        self, connection: AsyncConnection, sponsorship_ids: Sequence[int], *, now: datetime
    ) -> None:
        """Card-ready notices to the ASN (and the worker, where a worker channel exists).

        The text says from which day the worker is protected when the card comes
        before the first covered month (PRODUCT 3: the 1st of that month).
        """
        if not sponsorship_ids:
            return
        today = now.astimezone(self._timezone).date()
        rows = await connection.execute(
            _RECIPIENTS_AMONG, {"sponsorship_ids": list(sponsorship_ids)}
        )
        for row in rows:
            t = self._catalogs.translator(Language(row.language))
            start = protected_from(row.first_month)
            params = {"name": row.full_name, "kpj": row.kpj, "opd": row.name}
            await enqueue(
                connection,
                Notice(
                    dedupe_key=f"card_ready:asn:{row.id}",
                    channel=Channel(row.channel),
                    recipient=row.external_id,
                    kind="card_ready",
                    body=t(
                        "notice.card_ready.asn",
                        protection=_protection(t, start, today, name=row.full_name),
                        **params,
                    ),
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
                        body=wt(
                            "notice.card_ready.worker",
                            protection=_protection(wt, start, today),
                            **params,
                        ),
                        template="card_ready_worker",
                        params=params,
                    ),
                    now=now,
                )

    async def payment_recorded(
        self, connection: AsyncConnection, sponsorship_id: int, months: Sequence[date]
    ) -> None:
        """A recorded payment cancels the still-unsent reminders of its months (PRODUCT 5)."""
        await cancel_reminders(connection, sponsorship_id, months)

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
            "months": t.months(row.first_month, last),
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

    async def sponsorship_ended(
        self,
        connection: AsyncConnection,
        sponsorship_id: int,
        *,
        ended_month: date | None,
        reason: Callable[[Translator], str],
        now: datetime,
    ) -> None:
        """Tell the OPD's PICs, and the worker on WhatsApp, that the ASN stopped sponsoring,
        with the last month covered. `reason` renders the ASN's reason
        in a recipient's language. The worker is told only if they were ever contacted
        about the enrollment (asked for consent, or consented)."""
        row = (await connection.execute(_RECIPIENT, {"sponsorship_id": sponsorship_id})).one()
        opd_id = await connection.scalar(_OPD_OF, {"sponsorship_id": sponsorship_id})
        pics = (await pics_by_opd(connection)).get(int(opd_id or 0), [])

        def until(t: Translator) -> str:
            return t.month(ended_month) if ended_month else t("stop.until_none")

        for pic in pics:
            t = self._catalogs.translator(pic.language)
            params = {
                "name": row.full_name,
                "sponsor": row.asn_name,
                "until": until(t),
                "reason": reason(t),
            }
            await enqueue(
                connection,
                Notice(
                    dedupe_key=f"ended:{sponsorship_id}:pic:{pic.pic_id}",
                    channel=pic.channel,
                    recipient=pic.recipient,
                    kind="sponsorship_ended",
                    body=t("notice.sponsorship_ended.pic", kpj=row.kpj or "-", **params),
                    template="sponsorship_ended_pic",
                    params=params,
                ),
                now=now,
            )
        consent = WorkerConsent(row.worker_consent)
        contacted = consent in (WorkerConsent.PENDING, WorkerConsent.GIVEN)
        if self._worker_channel is None or not row.phone_e164 or not contacted:
            return
        wt = self._catalogs.translator(self._worker_language)
        worker_params = {"name": row.full_name, "asn": row.asn_name, "until": until(wt)}
        await enqueue(
            connection,
            Notice(
                dedupe_key=f"ended:{sponsorship_id}:worker",
                channel=self._worker_channel,
                recipient=self._worker_recipient(row.phone_e164),
                kind="sponsorship_ended",
                body=wt("notice.sponsorship_ended.worker", **worker_params),
                template="sponsorship_ended_worker",
                params=worker_params,
            ),
            now=now,
        )


def _protection(t: Translator, start: date, today: date, *, name: str | None = None) -> str:
    """Say "protected from 1 January 2027" before the first covered month, "now" within it.

    With `name` the sentence is about the worker (to the ASN); without, to the worker.
    """
    if start > today:
        if name is None:
            return t("notice.protection.worker_from", date=t.date(start))
        return t("notice.protection.asn_from", name=name, date=t.date(start))
    if name is None:
        return t("notice.protection.worker_now")
    return t("notice.protection.asn_now", name=name)
