"""SPEC 4.2: an ASN enrolls a worker; the enrollment then waits for the PIC."""

from __future__ import annotations

import base64
from datetime import date, datetime
from typing import ClassVar

from sqlalchemy.exc import IntegrityError

from domain.eligibility import AgeProblem, age_on, check_age
from domain.months import add_months
from domain.nik import NikError, parse_nik
from domain.phone import PhoneError, display_phone, parse_mobile
from domain.tariff import FundingSource
from domain.vocabulary import (
    ConsentPurpose,
    ConsentSubject,
    Occupation,
    PaymentPlan,
    Sex,
    WorkerConsent,
)
from handlers.context import Context
from handlers.flow import Answer, Done, Flow, Goto, Invalid, Next, Outcome, Step
from handlers.flows.common import EditFieldStep, PersonNameStep
from handlers.parsing import DateProblem, TextProblem, parse_day, parse_place
from handlers.types import Reply
from storage.models import Worker

#: Bump when the payroll-deduction statement text changes.
PAYROLL_STATEMENT_VERSION = "payroll-2026-11"
#: How many coverage months are offered, starting next month (the PIC still has
#: to verify and BPJS to register, so the current month is not offered).
FIRST_MONTH_CHOICES = 3


def _nik_of(ctx: Context) -> str:
    """The draft's NIK; kept encrypted even in the conversation row."""
    return ctx.cipher.decrypt(base64.b64decode(str(ctx.state.data["nik_enc"])))


def _funding(plan: PaymentPlan) -> FundingSource:
    if plan is PaymentPlan.PAYROLL_DEDUCTION:
        return FundingSource.PAYROLL_DEDUCTION
    return FundingSource.ASN_PERSONAL


def _plan_amount(ctx: Context, plan: PaymentPlan, month: date) -> int:
    return ctx.config.tariff.plan_amount(plan, month, funding=_funding(plan))


def _age_error(ctx: Context, birth: date) -> str | None:
    bounds = ctx.config.age_bounds
    problem = check_age(birth, ctx.today, bounds)
    if problem is None:
        return None
    age = age_on(birth, ctx.today) if problem is not AgeProblem.BORN_IN_FUTURE else 0
    return ctx.t(f"enroll.age.{problem.value}", age=age, min=bounds.minimum, max=bounds.maximum)


class OccupationStep(Step):
    name = "occupation"
    help_key = "enroll.help.occupation"
    free_text = False

    async def ask(self, ctx: Context) -> list[Reply]:
        options = tuple(
            ctx.option(occ.value, ctx.t(f"occupation.{occ.value}")) for occ in Occupation
        )
        return [Reply(ctx.t("enroll.ask_occupation"), options=options)]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        ctx.state.data["occupation"] = Occupation(answer.choice or "").value
        return Next()


class NameStep(PersonNameStep):
    help_key = "enroll.help.name"
    ask_key = "enroll.ask_name"


class NikStep(Step):
    name = "nik"
    help_key = "enroll.help.nik"

    async def ask(self, ctx: Context) -> list[Reply]:
        return [Reply(ctx.t("enroll.ask_nik", name=ctx.state.data.get("full_name", "")))]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        parsed = parse_nik(answer.text or "", today=ctx.today)
        if isinstance(parsed, NikError):
            return Invalid(ctx.t(f"nik.error.{parsed.problem.value}", length=parsed.length))
        worker = await ctx.repo.workers.by_nik(parsed.value)
        if worker is not None:
            existing = await ctx.repo.sponsorships.open_for_worker(worker.id)
            # A correction (handlers.flows.correction) keeps its own enrollment's NIK.
            if existing is not None and existing.id != ctx.state.data.get("sid"):
                asn = await ctx.asn()
                if asn is not None and existing.asn_id == asn.id:
                    return Invalid(
                        ctx.t(
                            "enroll.nik_already_yours",
                            status=ctx.t(f"status.{existing.status.value}"),
                        )
                    )
                return Invalid(ctx.t("enroll.nik_taken", opd=existing.opd.name))
        data = ctx.state.data
        changed = data.get("nik_masked") != parsed.masked or "nik_enc" not in data
        data.update(
            nik_enc=base64.b64encode(ctx.cipher.encrypt(parsed.value)).decode("ascii"),
            nik_masked=parsed.masked,
            nik_birth=parsed.birth_date.isoformat(),
            sex=parsed.sex.value,
        )
        if changed and data.get("_editing"):
            # A new NIK carries a new birth date: confirm it before the summary.
            data.pop("birth_date", None)
            return Goto(BirthDateStep.name)
        return Next()


class BirthDateStep(Step):
    """The birth date is offered from the NIK; a different typed date asks to confirm."""

    name = "birth_date"
    help_key = "enroll.help.birth_date"

    async def ask(self, ctx: Context) -> list[Reply]:
        nik_birth = date.fromisoformat(str(ctx.state.data["nik_birth"]))
        return [
            Reply(
                ctx.t("enroll.ask_birth_date", date=ctx.t.date(nik_birth)),
                options=(ctx.option("nik", ctx.t("enroll.birth_date.use_nik")),),
            )
        ]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        data = ctx.state.data
        nik_birth = date.fromisoformat(str(data["nik_birth"]))
        if answer.choice == "nik":
            chosen = nik_birth
        else:
            typed = parse_day(answer.text or "")
            if isinstance(typed, DateProblem):
                return Invalid(ctx.t(f"date.error.{typed.value}"))
            chosen = typed
        if chosen != nik_birth:
            data["birth_date_typed"] = chosen.isoformat()
            return Goto(BirthDateMismatchStep.name)
        error = _age_error(ctx, chosen)
        if error is not None:
            return Invalid(error)
        data.update(birth_date=chosen.isoformat(), birth_date_differs=False)
        return Next()


class BirthDateMismatchStep(Step):
    name = "birth_date_mismatch"
    help_key = "enroll.help.birth_date_mismatch"
    free_text = False

    def applies(self, ctx: Context) -> bool:
        return False  # reached only from the birth date step

    async def ask(self, ctx: Context) -> list[Reply]:
        data = ctx.state.data
        typed = date.fromisoformat(str(data["birth_date_typed"]))
        nik_birth = date.fromisoformat(str(data["nik_birth"]))
        typed_s, nik_s = ctx.t.date(typed), ctx.t.date(nik_birth)
        return [
            Reply(
                ctx.t("enroll.birth_date_mismatch", typed=typed_s, nik_date=nik_s),
                options=(
                    ctx.option("typed", ctx.t("enroll.birth_date.keep_typed", date=typed_s)),
                    ctx.option("nik", ctx.t("enroll.birth_date.take_nik", date=nik_s)),
                    ctx.option("retype", ctx.t("enroll.birth_date.retype")),
                ),
            )
        ]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        data = ctx.state.data
        if answer.choice == "retype":
            return Goto(BirthDateStep.name)
        key = "birth_date_typed" if answer.choice == "typed" else "nik_birth"
        chosen = date.fromisoformat(str(data[key]))
        error = _age_error(ctx, chosen)
        if error is not None:
            return Invalid(error)
        data.update(birth_date=chosen.isoformat(), birth_date_differs=answer.choice == "typed")
        return Next()


class WorkerPhoneStep(Step):
    name = "phone"
    help_key = "enroll.help.phone"

    async def ask(self, ctx: Context) -> list[Reply]:
        return [
            Reply(
                ctx.t("enroll.ask_phone"),
                options=(ctx.option("skip", ctx.t("enroll.phone.skip")),),
            )
        ]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        if answer.choice == "skip":
            ctx.state.data["worker_phone"] = None
            return Next()
        # A contact shared from the address book is fine here: it is the worker's.
        parsed = parse_mobile(answer.contact_phone or answer.text or "")
        if isinstance(parsed, PhoneError):
            return Invalid(ctx.t(f"phone.error.{parsed.problem.value}"))
        ctx.state.data["worker_phone"] = parsed.e164
        return Next()


class _PlaceStep(Step):
    field: str

    async def ask(self, ctx: Context) -> list[Reply]:
        return [Reply(ctx.t(f"enroll.ask_{self.field}"))]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        place = parse_place(answer.text or "")
        if isinstance(place, TextProblem):
            return Invalid(ctx.t(f"place.error.{place.value}"))
        ctx.state.data[self.field] = place
        return Next()


class VillageStep(_PlaceStep):
    name = "village"
    help_key = "enroll.help.village"
    field = "village"


class DistrictStep(_PlaceStep):
    name = "district"
    help_key = "enroll.help.district"
    field = "district"


class PlanStep(Step):
    name = "plan"
    help_key = "enroll.help.plan"
    free_text = False

    async def ask(self, ctx: Context) -> list[Reply]:
        month = add_months(ctx.today.replace(day=1), 1)
        options = tuple(
            ctx.option(
                plan.value,
                ctx.t(
                    f"plan.option.{plan.value}", amount=ctx.t.money(_plan_amount(ctx, plan, month))
                ),
            )
            for plan in ctx.config.plans
        )
        return [Reply(ctx.t("enroll.ask_plan"), options=options)]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        plan = PaymentPlan(answer.choice or "")
        data = ctx.state.data
        data["plan"] = plan.value
        if plan is PaymentPlan.PAYROLL_DEDUCTION:
            return Goto(PayrollStatementStep.name)
        data.pop("payroll_agreed_at", None)
        return Next()


class PayrollStatementStep(Step):
    """The ASN's statement of willingness for payroll deduction (SPEC 3), recorded on confirm."""

    name = "payroll_statement"
    help_key = "enroll.help.payroll_statement"
    free_text = False
    #: Where "choose another plan" leads.
    plan_step: ClassVar[str] = "plan"

    def applies(self, ctx: Context) -> bool:
        return ctx.state.data.get("plan") == PaymentPlan.PAYROLL_DEDUCTION.value

    async def monthly_amount(self, ctx: Context) -> int:
        """The monthly deduction the statement names (next month's tariff)."""
        month = add_months(ctx.today.replace(day=1), 1)
        return _plan_amount(ctx, PaymentPlan.PAYROLL_DEDUCTION, month)

    async def ask(self, ctx: Context) -> list[Reply]:
        amount = await self.monthly_amount(ctx)
        return [
            Reply(
                ctx.t("enroll.payroll_statement", amount=ctx.t.money(amount)),
                options=(
                    ctx.option("agree", ctx.t("enroll.payroll.agree")),
                    ctx.option("other", ctx.t("enroll.payroll.other_plan")),
                ),
            )
        ]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        if answer.choice == "other":
            return Goto(self.plan_step)
        ctx.state.data["payroll_agreed_at"] = ctx.now.isoformat()
        return Next()


class FirstMonthStep(Step):
    name = "first_month"
    help_key = "enroll.help.first_month"
    free_text = False

    async def ask(self, ctx: Context) -> list[Reply]:
        start = add_months(ctx.today.replace(day=1), 1)
        months = [add_months(start, i) for i in range(FIRST_MONTH_CHOICES)]
        options = tuple(ctx.option(m.strftime("%Y-%m"), ctx.t.month(m)) for m in months)
        return [Reply(ctx.t("enroll.ask_first_month"), options=options)]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        ctx.state.data["first_month"] = f"{answer.choice}-01"
        return Next()


FIELDS = (
    "occupation",
    "name",
    "nik",
    "birth_date",
    "phone",
    "village",
    "district",
    "plan",
    "first_month",
)


class SummaryStep(Step):
    name = "summary"
    help_key = "enroll.help.summary"
    free_text = False

    async def ask(self, ctx: Context) -> list[Reply]:
        t, data = ctx.t, ctx.state.data
        plan = PaymentPlan(str(data["plan"]))
        first_month = date.fromisoformat(str(data["first_month"]))
        birth = date.fromisoformat(str(data["birth_date"]))
        text = t(
            "enroll.summary",
            occupation=t(f"occupation.{data['occupation']}"),
            name=data["full_name"],
            nik=data["nik_masked"],
            birth_date=t.date(birth),
            birth_note=t("enroll.summary.birth_differs") if data.get("birth_date_differs") else "",
            sex=t(f"sex.{data['sex']}"),
            phone=display_phone(data["worker_phone"])
            if data.get("worker_phone")
            else t("enroll.summary.no_phone"),
            village=data["village"],
            district=data["district"],
            plan=t(f"plan.{plan.value}"),
            amount=t.money(_plan_amount(ctx, plan, first_month)),
            first_month=t.month(first_month),
        )
        return [
            Reply(
                text,
                options=(
                    ctx.option("confirm", t("summary.send_to_pic")),
                    ctx.option("edit", t("summary.edit")),
                ),
            )
        ]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        if answer.choice == "edit":
            return Goto(EditStep.name)
        asn = await ctx.asn()
        if asn is None:
            return Done([Reply(ctx.t("enroll.register_first"))])
        limit = ctx.config.max_workers_per_asn
        if await ctx.repo.sponsorships.count_open_for_asn(asn.id) >= limit:
            return Done([Reply(ctx.t("enroll.limit_reached", max=limit))])
        data = ctx.state.data
        nik = _nik_of(ctx)
        worker = await ctx.repo.workers.by_nik(nik)
        if worker is not None:
            existing = await ctx.repo.sponsorships.open_for_worker(worker.id)
            if existing is not None:
                return Invalid(ctx.t("enroll.nik_taken", opd=existing.opd.name))
        plan = PaymentPlan(str(data["plan"]))
        try:
            async with ctx.repo.session.begin_nested():
                worker_id = await save_worker(ctx, worker, nik)
                sponsorship_id = await ctx.repo.sponsorships.add(
                    worker_id=worker_id,
                    asn_id=asn.id,
                    opd_id=asn.opd_id,
                    occupation=Occupation(str(data["occupation"])),
                    plan=plan,
                    first_month=date.fromisoformat(str(data["first_month"])),
                    # Becomes pending below when the request goes out (SPEC 4.6).
                    worker_consent=WorkerConsent.NOT_REQUESTED,
                    birth_date_differs_from_nik=bool(data.get("birth_date_differs")),
                    now=ctx.now,
                )
        except IntegrityError:
            # Another ASN enrolled the same NIK a moment ago (unique open sponsorship).
            return Invalid(ctx.t("enroll.nik_taken_just_now"))
        if plan is PaymentPlan.PAYROLL_DEDUCTION:
            await _record_payroll_statement(ctx, asn.id, sponsorship_id)
        name = str(data["full_name"])
        replies = [Reply(ctx.t("enroll.done", name=name, opd=asn.opd_name))]
        if await ctx.notices.consent_request(ctx.repo.connection, sponsorship_id, now=ctx.now):
            replies.append(Reply(ctx.t("enroll.consent_requested", name=name)))
        return Done(replies)


async def save_worker(ctx: Context, existing: Worker | None, nik: str) -> int:
    """Write the draft's worker fields (a new worker, or `existing` refreshed); its id."""
    data = ctx.state.data
    return await ctx.repo.workers.upsert(
        existing,
        nik=nik,
        nik_masked=str(data["nik_masked"]),
        full_name=str(data["full_name"]),
        birth_date=date.fromisoformat(str(data["birth_date"])),
        sex=Sex(str(data["sex"])),
        phone_e164=data.get("worker_phone"),
        village=str(data["village"]),
        district=str(data["district"]),
        now=ctx.now,
    )


async def _record_payroll_statement(ctx: Context, asn_id: int, sponsorship_id: int) -> None:
    agreed_at = datetime.fromisoformat(
        str(ctx.state.data.get("payroll_agreed_at", ctx.now.isoformat()))
    )
    await ctx.repo.consents.record(
        subject=ConsentSubject.ASN,
        subject_id=asn_id,
        purpose=ConsentPurpose.PAYROLL_DEDUCTION,
        text_version=PAYROLL_STATEMENT_VERSION,
        granted=True,
        channel=ctx.event.channel,
        channel_account_id=ctx.account.id,
        sponsorship_id=sponsorship_id,
        recorded_at=agreed_at,
    )


class EditStep(EditFieldStep):
    fields = FIELDS
    label_prefix = "enroll.field"


class EnrollmentFlow(Flow):
    name = "enrollment"
    title_key = "flow.title.enrollment"
    steps = (
        OccupationStep(),
        NameStep(),
        NikStep(),
        BirthDateStep(),
        BirthDateMismatchStep(),
        WorkerPhoneStep(),
        VillageStep(),
        DistrictStep(),
        PlanStep(),
        PayrollStatementStep(),
        FirstMonthStep(),
        SummaryStep(),
        EditStep(),
    )

    async def can_start(self, ctx: Context) -> str | None:
        asn = await ctx.asn()
        if asn is None:
            return ctx.t("enroll.register_first")
        limit = ctx.config.max_workers_per_asn
        if await ctx.repo.sponsorships.count_open_for_asn(asn.id) >= limit:
            return ctx.t("enroll.limit_reached", max=limit)
        return None
