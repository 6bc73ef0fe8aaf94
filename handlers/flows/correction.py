"""PRODUCT 4.3/4.5: the ASN corrects an enrollment the PIC returned.

Started from "my workers" (`start`), it loads the returned enrollment into the
same steps as a new enrollment, opens at the summary with the PIC's reason
and "edit any field", and on confirmation writes the corrections and puts the
enrollment back into the PIC's queue. Only the ASN's own enrollments are
found; one that is no longer "returned" (already corrected and resent) is
refused with the reason.
"""

from __future__ import annotations

import base64
from datetime import date

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from domain.months import add_months
from domain.nik import NikError, parse_nik
from domain.vocabulary import (
    Occupation,
    PaymentPlan,
    Relationship,
    SponsorshipStatus,
)
from handlers import menus, staffing
from handlers.context import Context
from handlers.flow import Answer, Done, Flow, Goto, Invalid, Outcome
from handlers.flows import enrollment as e
from handlers.types import Reply
from storage import sponsorship_state as state
from storage.audit import Actor
from storage.models import Sponsorship, Worker


async def _returned(ctx: Context, sponsorship_id: int) -> tuple[Sponsorship, Worker] | None:
    """The ASN's own enrollment with its worker, whatever its status; None if not theirs."""
    asn = await ctx.asn()
    if asn is None:
        return None
    row = (
        await ctx.repo.session.execute(
            select(Sponsorship, Worker)
            .join(Worker, Worker.id == Sponsorship.worker_id)
            .where(Sponsorship.id == sponsorship_id, Sponsorship.asn_id == asn.id)
        )
    ).first()
    return (row[0], row[1]) if row is not None else None


async def load(ctx: Context, sponsorship_id: int) -> str | dict[str, object]:
    """The flow's data for a returned enrollment, or the message why it cannot be corrected."""
    found = await _returned(ctx, sponsorship_id)
    if found is None:
        return ctx.t("fix.not_found")
    sponsorship, worker = found
    if sponsorship.status is not SponsorshipStatus.RETURNED:
        return ctx.t("fix.not_returned", status=ctx.t(f"status.{sponsorship.status.value}"))
    return _answers_of(ctx, sponsorship, worker)


def _answers_of(ctx: Context, sponsorship: Sponsorship, worker: Worker) -> dict[str, object]:
    """The enrollment as the flow's answers (what the correction starts from)."""
    nik = ctx.cipher.decrypt(worker.nik_ciphertext)
    parsed = parse_nik(nik, today=ctx.today)
    nik_birth = worker.birth_date if isinstance(parsed, NikError) else parsed.birth_date
    return {
        "sid": sponsorship.id,
        "return_reason": sponsorship.return_reason or "",
        "relationship": sponsorship.relationship_to_asn.value,
        # None for a family member enrolled before occupations were asked: asked on resend.
        "occupation": sponsorship.occupation.value if sponsorship.occupation else None,
        "occupation_text": sponsorship.occupation_text,
        "full_name": worker.full_name,
        "nik_enc": base64.b64encode(ctx.cipher.encrypt(nik)).decode("ascii"),
        "nik_masked": worker.nik_masked,
        "nik_birth": nik_birth.isoformat(),
        "sex": worker.sex.value,
        "birth_date": worker.birth_date.isoformat(),
        "birth_date_differs": sponsorship.birth_date_differs_from_nik,
        "birth_place": worker.birth_place,
        "worker_phone": worker.phone_e164,
        "street_address": worker.street_address,
        "village": worker.village,
        "district": worker.district,
        "regency": worker.regency,
        "plan": sponsorship.plan.value,
        "first_month": sponsorship.first_month.isoformat(),
    }


#: Answers that name no field of their own: bookkeeping, or derived from the NIK (which is
#: compared by its keyed hash: its ciphertext differs at every encryption).
_NOT_FIELDS = frozenset({"sid", "return_reason", "nik_enc", "nik_masked", "nik_birth", "sex"})
#: An answer's key where it differs from the field's name (`enrollment.FIELDS`).
_FIELD_OF = {
    "full_name": "name",
    "worker_phone": "phone",
    "birth_date_differs": "birth_date",
    "occupation_text": "occupation",
    # The four address parts are edited, and shown as changed, as one "address" entry.
    "street_address": e.ADDRESS_FIELD,
    "village": e.ADDRESS_FIELD,
    "district": e.ADDRESS_FIELD,
    "regency": e.ADDRESS_FIELD,
}


def changed_fields(
    ctx: Context, sponsorship: Sponsorship, worker: Worker, *, same_nik: bool
) -> list[str]:
    """The fields (`enrollment.FIELDS`, in their order) whose answers differ from the
    enrollment as it was returned: what the PIC is shown as changed."""
    before = _answers_of(ctx, sponsorship, worker)
    after = ctx.state.data
    changed = {"nik"} if not same_nik else set()
    for key, value in before.items():
        if key not in _NOT_FIELDS and (after.get(key) or None) != (value or None):
            changed.add(_FIELD_OF.get(key, key))
    return [field for field in e.FIELDS if field in changed]


class _NotReturned(Exception):
    """The enrollment left "returned" while the ASN corrected it."""

    def __init__(self, status: SponsorshipStatus) -> None:
        super().__init__(status)
        self.found = status


class CorrectionSummaryStep(e.SummaryStep):
    """The enrollment as it stands, the PIC's reason, and "send back to the PIC"."""

    help_key = "fix.help.summary"

    async def ask(self, ctx: Context) -> list[Reply]:
        replies = await super().ask(ctx)
        question = replies[-1]
        reason = ctx.t("fix.reason", reason=ctx.state.data.get("return_reason") or "-")
        options = (
            ctx.option("confirm", ctx.t("fix.send_again")),
            ctx.option("edit", ctx.t("summary.edit")),
        )
        return [Reply(reason + "\n\n" + question.text, options=options)]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        if answer.choice == "edit":
            return Goto(e.EditStep.name)
        data = ctx.state.data
        # An enrollment from before a question existed (an address, the occupation)
        # is completed before it goes back: BPJS needs every part.
        missing = e.first_missing(ctx)
        if missing is not None:
            data["_editing"] = True
            return Goto(missing, notice=e.missing_notice(ctx, missing))
        found = await _returned(ctx, int(str(data["sid"])))
        if found is None:
            return Done([Reply(ctx.t("fix.not_found"))])
        sponsorship, worker = found
        if sponsorship.status is not SponsorshipStatus.RETURNED:
            status = ctx.t(f"status.{sponsorship.status.value}")
            return Done([Reply(ctx.t("fix.not_returned", status=status))])
        first_month = date.fromisoformat(str(data["first_month"]))
        if first_month < add_months(ctx.today.replace(day=1), 1):
            data["_editing"] = True
            return Goto(e.FirstMonthStep.name, notice=ctx.t("fix.first_month_passed"))
        nik = e._nik_of(ctx)
        same_worker = ctx.cipher.lookup_hash(nik) == worker.nik_hash
        existing = worker if same_worker else await ctx.repo.workers.by_nik(nik)
        if existing is not None and not same_worker:
            other = await ctx.repo.sponsorships.open_for_worker(existing.id)
            if other is not None and other.id != sponsorship.id:
                data["_editing"] = True
                return await e.refuse_nik(ctx, str(data["nik_masked"]), other)
        plan = PaymentPlan(str(data["plan"]))
        changed = changed_fields(ctx, sponsorship, worker, same_nik=same_worker)
        try:
            async with ctx.repo.session.begin_nested():
                worker_id = await e.save_worker(
                    ctx, existing.id if existing is not None else None, nik
                )
                outcome = await state.transition(
                    ctx.repo.connection,
                    state.Event.RESUBMIT,
                    sponsorship.id,
                    now=ctx.now,
                    values={
                        "worker_id": worker_id,
                        "occupation": Occupation(str(data["occupation"])),
                        "occupation_text": e.occupation_text(data),
                        "relationship_to_asn": Relationship(str(data["relationship"])),
                        "plan": plan,
                        "first_month": first_month,
                        "birth_date_differs_from_nik": bool(data.get("birth_date_differs")),
                    },
                    actor=Actor.account("asn", ctx.account.id),
                    # Field names only (no personal data): the PIC's review shows them.
                    details={"changed": changed},
                )
                if not outcome.done:
                    # Ended meanwhile (stopped elsewhere, the worker erased): the worker
                    # saved above goes with the savepoint.
                    raise _NotReturned(outcome.status or sponsorship.status)
        except _NotReturned as refused:
            status = ctx.t(f"status.{refused.found.value}")
            return Done([Reply(ctx.t("fix.not_returned", status=status))])
        except IntegrityError:
            mine = await ctx.asn()
            assert mine is not None
            contact = await staffing.contact(ctx, mine.opd_id, mine.opd_name)
            return Invalid(ctx.t("enroll.nik_taken_just_now", contact=contact))
        asn = await ctx.asn()
        assert asn is not None
        if plan is PaymentPlan.PAYROLL_DEDUCTION and sponsorship.plan is not plan:
            await e._record_payroll_statement(ctx, asn.id, sponsorship.id)
        await ctx.notices.enrollment_resubmitted(
            ctx.repo.connection, sponsorship.id, changed=changed, now=ctx.now
        )
        name = str(data["full_name"])
        text = await staffing.queued_text(
            ctx, name, sponsorship.opd_id, asn.opd_name, waiting_key="fix.done"
        )
        return Done([Reply(text)], sent_key="flow.already_sent.correction")


class CorrectionNikTakenStep(e.NikTakenStep):
    """A returned enrollment keeps its worker: retype the NIK or stop correcting."""

    offers_other_worker = False
    cancelled_key = "fix.cancelled"


class CorrectionAgeRefusedStep(e.AgeRefusedStep):
    cancelled_key = "fix.cancelled"


class CorrectionFlow(Flow):
    name = "correction"
    title_key = "flow.title.correction"
    steps = (
        CorrectionSummaryStep(),
        e.RelationshipStep(),
        e.OccupationStep(),
        e.OccupationOtherStep(),
        e.NameStep(),
        e.NikStep(),
        CorrectionNikTakenStep(),
        e.BirthDateStep(),
        e.BirthDateMismatchStep(),
        CorrectionAgeRefusedStep(),
        e.BirthPlaceStep(),
        e.WorkerPhoneStep(),
        e.StreetStep(),
        e.VillageStep(),
        e.DistrictStep(),
        e.RegencyStep(),
        e.PlanStep(),
        e.PayrollStatementStep(),
        e.FirstMonthStep(),
        e.EditStep(),
    )

    async def leave(self, ctx: Context) -> Reply:
        return await menus.main_menu(ctx)
