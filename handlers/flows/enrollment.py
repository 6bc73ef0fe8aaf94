"""PRODUCT 4.2: an ASN enrolls a worker; the enrollment then waits for the PIC."""

from __future__ import annotations

import base64
from datetime import date, datetime
from typing import Any, ClassVar

from sqlalchemy.exc import IntegrityError

from domain.eligibility import AgeProblem, age_on, check_age
from domain.months import add_months
from domain.nik import NikError, parse_nik
from domain.phone import PhoneError, display_phone, parse_mobile
from domain.tariff import FundingSource
from domain.vocabulary import (
    OFFERED_OCCUPATIONS,
    ConsentMethod,
    ConsentPurpose,
    ConsentSubject,
    Occupation,
    PaymentPlan,
    Relationship,
    Sex,
    WorkerConsent,
)
from handlers import menus, staffing
from handlers.context import Context
from handlers.flow import Answer, Done, Flow, Goto, Invalid, Next, Outcome, Step
from handlers.flows import consent
from handlers.flows.common import EditFieldStep, PersonNameStep, work_label
from handlers.parsing import (
    DateProblem,
    TextProblem,
    parse_day,
    parse_occupation,
    parse_place,
    parse_street,
)
from handlers.types import Option, Reply
from storage.models import Sponsorship

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


def _eligible(ctx: Context, birth: date) -> bool:
    return check_age(birth, ctx.today, ctx.config.age_bounds) is None


def _refuse_age(ctx: Context, birth: date, *, source: str) -> Goto:
    """Leave for the age refusal, which names `birth` and where it came from ("nik"/"typed")."""
    ctx.state.data["age_refused"] = {"birth": birth.isoformat(), "source": source}
    return Goto(AgeRefusedStep.name)


def _forget_birth_date(data: dict[str, object]) -> None:
    """A new NIK carries a new birth date and sex: what was confirmed for the old one goes."""
    for key in ("birth_date", "birth_date_differs", "birth_date_typed"):
        data.pop(key, None)


#: The answers about the worker as a person; "another worker" forgets all of them.
PERSON_KEYS = (
    "full_name",
    "nik_enc",
    "nik_masked",
    "nik_birth",
    "sex",
    "birth_date",
    "birth_date_differs",
    "birth_date_typed",
    "birth_place",
    "worker_phone",
    "street_address",
    "village",
    "district",
    "regency",
    "nik_refused",
    "age_refused",
)


class RelationshipStep(Step):
    """How the worker is related to the ASN; asked apart from what the worker does."""

    name = "relationship"
    help_key = "enroll.help.relationship"
    free_text = False

    async def ask(self, ctx: Context) -> list[Reply]:
        options = tuple(
            ctx.option(relation.value, ctx.t(f"relationship.{relation.value}"))
            for relation in Relationship
        )
        return [Reply(ctx.t("enroll.ask_relationship"), options=options)]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        ctx.state.data["relationship"] = Relationship(answer.choice or "").value
        return Next()


class OccupationStep(Step):
    """What the worker does: one of the listed occupations, or typed (then "other").

    "Other" asks for the occupation as text (`OccupationOtherStep`); text typed
    here that matches no option is taken as that occupation at once, so a
    person who answers in words is not refused.
    """

    name = "occupation"
    help_key = "enroll.help.occupation"

    async def ask(self, ctx: Context) -> list[Reply]:
        options = tuple(
            ctx.option(occ.value, ctx.t(f"occupation.{occ.value}")) for occ in OFFERED_OCCUPATIONS
        )
        return [Reply(ctx.t("enroll.ask_occupation"), options=options)]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        data = ctx.state.data
        if answer.choice is None:
            return take_occupation_text(ctx, answer.text or "")
        occupation = Occupation(answer.choice)
        if occupation is Occupation.OTHER:
            return Goto(OccupationOtherStep.name)
        data["occupation"] = occupation.value
        data.pop("occupation_text", None)
        return Next()


def take_occupation_text(ctx: Context, text: str) -> Outcome:
    """Keep a typed occupation as "other" with its text, or say what is wrong with it."""
    typed = parse_occupation(text)
    if isinstance(typed, TextProblem):
        return Invalid(ctx.t(f"occupation.error.{typed.value}"))
    ctx.state.data.update(occupation=Occupation.OTHER.value, occupation_text=typed)
    return Next()


class OccupationOtherStep(Step):
    """The occupation as text after "other" (BPJS registers what the worker does)."""

    name = "occupation_other"
    help_key = "enroll.help.occupation_other"

    def applies(self, ctx: Context) -> bool:
        return False  # reached only from the occupation step

    async def ask(self, ctx: Context) -> list[Reply]:
        return [Reply(ctx.t("enroll.ask_occupation_other"))]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        return take_occupation_text(ctx, answer.text or "")


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
        data = ctx.state.data
        worker_id = await ctx.repo.workers.id_by_nik(parsed.value)
        if worker_id is not None:
            existing = await ctx.repo.sponsorships.open_for_worker(worker_id)
            # A correction (handlers.flows.correction) keeps its own enrollment's NIK.
            if existing is not None and existing.id != data.get("sid"):
                return await refuse_nik(ctx, parsed.masked, existing)
        # Compared whole: two NIKs share a mask ("3201********0001") yet not a birth date.
        changed = "nik_enc" not in data or _nik_of(ctx) != parsed.value
        data.update(
            nik_enc=base64.b64encode(ctx.cipher.encrypt(parsed.value)).decode("ascii"),
            nik_masked=parsed.masked,
            nik_birth=parsed.birth_date.isoformat(),
            sex=parsed.sex.value,
        )
        data.pop("nik_refused", None)
        if changed or "birth_date" not in data:
            _forget_birth_date(data)
            if not _eligible(ctx, parsed.birth_date):
                return _refuse_age(ctx, parsed.birth_date, source="nik")
            # The birth date is confirmed for this NIK, also when editing from the summary.
            return Goto(BirthDateStep.name)
        return Next()


async def refuse_nik(ctx: Context, masked: str, existing: Sponsorship) -> Goto:
    """Leave for the NIK refusal: `masked`'s worker already has the open enrollment `existing`."""
    asn = await ctx.asn()
    mine = asn is not None and existing.asn_id == asn.id
    ctx.state.data["nik_refused"] = {
        "masked": masked,
        "status": existing.status.value if mine else None,
        "opd": None if mine else existing.opd.name,
        "opd_id": None if mine else existing.opd_id,
    }
    if not mine:
        # The refusal names whom to contact there; nobody there: the administrators hear.
        await staffing.tell_if_unstaffed(ctx, existing.opd_id)
    return Goto(NikTakenStep.name)


class NikTakenStep(Step):
    """The NIK belongs to a worker with an open enrollment: only ways that can succeed.

    Retype the NIK (a typo: the name stays), start over with another worker
    (nothing of this one is kept), or cancel.
    """

    name = "nik_taken"
    help_key = "enroll.help.nik_taken"
    free_text = False
    #: False where the worker cannot be swapped (a correction of a returned enrollment).
    offers_other_worker: ClassVar[bool] = True
    cancelled_key: ClassVar[str] = "enroll.cancelled"

    def applies(self, ctx: Context) -> bool:
        return False  # reached only from the NIK step

    async def ask(self, ctx: Context) -> list[Reply]:
        refused = ctx.state.data["nik_refused"]
        assert isinstance(refused, dict)
        name = ctx.state.data.get("full_name", "")
        if refused.get("status"):
            status = ctx.t(f"status.{refused['status']}")
            text = ctx.t("enroll.nik_taken.yours", nik=refused["masked"], status=status)
        else:
            opd_id = refused.get("opd_id")
            contact = (
                await staffing.contact(ctx, int(opd_id), str(refused["opd"]), tell=False)
                if isinstance(opd_id, int)
                else ctx.t("contact.pic_unnamed", opd=refused["opd"])
            )
            text = ctx.t(
                "enroll.nik_taken.other_asn",
                nik=refused["masked"],
                opd=refused["opd"],
                contact=contact,
            )
        options = [ctx.option("retype", ctx.t("enroll.nik_taken.retype"))]
        if self.offers_other_worker:
            options.append(ctx.option("other", ctx.t("enroll.nik_taken.other_worker")))
        options.append(ctx.option("cancel", ctx.t("enroll.cancel")))
        ways = "enroll.nik_taken.ways" if self.offers_other_worker else "enroll.nik_taken.ways_fix"
        return [Reply(text + "\n\n" + ctx.t(ways, name=name), options=tuple(options))]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        data = ctx.state.data
        if answer.choice == "cancel":
            return Done([Reply(ctx.t(self.cancelled_key))])
        data.pop("nik_refused", None)
        if answer.choice == "other" and self.offers_other_worker:
            for key in PERSON_KEYS:
                data.pop(key, None)
            # Everything about the new worker is asked in order, not just the name.
            data.pop("_editing", None)
            return Goto(NameStep.name, rewind=True)
        return Goto(NikStep.name, rewind=True)


class BirthDateStep(Step):
    """The birth date is offered from the NIK; a different typed date asks to confirm.

    A NIK whose date is outside the age bounds is not offered (it would be refused).
    """

    name = "birth_date"
    help_key = "enroll.help.birth_date"

    async def ask(self, ctx: Context) -> list[Reply]:
        nik_birth = date.fromisoformat(str(ctx.state.data["nik_birth"]))
        if not _eligible(ctx, nik_birth):
            return [Reply(ctx.t("enroll.ask_birth_date_typed", date=ctx.t.date(nik_birth)))]
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
        if not _eligible(ctx, chosen):
            return _refuse_age(ctx, chosen, source="nik" if chosen == nik_birth else "typed")
        if chosen != nik_birth:
            data["birth_date_typed"] = chosen.isoformat()
            return Goto(BirthDateMismatchStep.name)
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
        options = [ctx.option("typed", ctx.t("enroll.birth_date.keep_typed", date=typed_s))]
        if _eligible(ctx, nik_birth):  # the NIK's date is offered only when it can be taken
            options.append(ctx.option("nik", ctx.t("enroll.birth_date.take_nik", date=nik_s)))
        options.append(ctx.option("retype", ctx.t("enroll.birth_date.retype")))
        return [
            Reply(
                ctx.t("enroll.birth_date_mismatch", typed=typed_s, nik_date=nik_s),
                options=tuple(options),
            )
        ]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        data = ctx.state.data
        if answer.choice == "retype":
            return Goto(BirthDateStep.name)
        key = "birth_date_typed" if answer.choice == "typed" else "nik_birth"
        chosen = date.fromisoformat(str(data[key]))
        if not _eligible(ctx, chosen):
            return _refuse_age(ctx, chosen, source="typed" if answer.choice == "typed" else "nik")
        data.update(birth_date=chosen.isoformat(), birth_date_differs=answer.choice == "typed")
        data.pop("birth_date_typed", None)
        return Next()


class AgeRefusedStep(Step):
    """The birth date makes the worker ineligible: say why, offer only what can succeed.

    Fix the NIK, fix the birth date (typed; the NIK's date is offered only when
    eligible), or cancel. No option leads back to this refusal by itself.
    """

    name = "age_refused"
    help_key = "enroll.help.age_refused"
    free_text = False
    cancelled_key: ClassVar[str] = "enroll.cancelled"

    def applies(self, ctx: Context) -> bool:
        return False  # reached only from the NIK and birth date steps

    async def ask(self, ctx: Context) -> list[Reply]:
        refused = ctx.state.data["age_refused"]
        assert isinstance(refused, dict)
        birth = date.fromisoformat(str(refused["birth"]))
        bounds = ctx.config.age_bounds
        problem = check_age(birth, ctx.today, bounds) or AgeProblem.TOO_YOUNG
        age = age_on(birth, ctx.today) if problem is not AgeProblem.BORN_IN_FUTURE else 0
        text = ctx.t(
            f"enroll.age.{problem.value}",
            age=age,
            min=bounds.minimum,
            max=bounds.maximum,
            date=ctx.t.date(birth),
            source=ctx.t(f"enroll.age.source.{refused['source']}"),
        )
        options = (
            ctx.option("fix_nik", ctx.t("enroll.age.fix_nik")),
            ctx.option("fix_birth_date", ctx.t("enroll.age.fix_birth_date")),
            ctx.option("cancel", ctx.t("enroll.cancel")),
        )
        return [Reply(text, options=options)]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        data = ctx.state.data
        if answer.choice == "cancel":
            return Done([Reply(ctx.t(self.cancelled_key))])
        data.pop("age_refused", None)
        if answer.choice == "fix_nik":
            return Goto(NikStep.name, rewind=True)
        data.pop("birth_date_typed", None)
        return Goto(BirthDateStep.name, rewind=True)


class BirthPlaceStep(Step):
    """The place of birth as on the KTP (the BPU registration asks for it)."""

    name = "birth_place"
    help_key = "enroll.help.birth_place"

    async def ask(self, ctx: Context) -> list[Reply]:
        return [Reply(ctx.t("enroll.ask_birth_place"))]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        place = parse_place(answer.text or "")
        if isinstance(place, TextProblem):
            return Invalid(ctx.t(f"place.error.{place.value}"))
        ctx.state.data["birth_place"] = place
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


class StreetStep(Step):
    """Street, house number, RT/RW or hamlet: the first line of the worker's address."""

    name = "street_address"
    help_key = "enroll.help.street_address"

    async def ask(self, ctx: Context) -> list[Reply]:
        return [Reply(ctx.t("enroll.ask_street_address"))]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        street = parse_street(answer.text or "")
        if isinstance(street, TextProblem):
            return Invalid(ctx.t(f"street.error.{street.value}"))
        ctx.state.data["street_address"] = street
        return Next()


class VillageStep(_PlaceStep):
    name = "village"
    help_key = "enroll.help.village"
    field = "village"


class DistrictStep(_PlaceStep):
    name = "district"
    help_key = "enroll.help.district"
    field = "district"


class RegencyStep(_PlaceStep):
    """Regency or city of the address; the collective file's work location too."""

    name = "regency"
    help_key = "enroll.help.regency"
    field = "regency"

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        outcome = await super().handle(ctx, answer)
        if isinstance(outcome, Next) and ctx.state.data.pop(ADDRESS_EDIT, None):
            ctx.state.data["_editing"] = True  # the last address part: back to the summary
        return outcome


#: Draft flag: the address is being edited from the summary as a whole.
ADDRESS_EDIT = "_address_edit"


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
    """The ASN's statement of willingness for payroll deduction (PRODUCT 3), recorded on confirm."""

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


#: "Edit" choice that asks the four address parts in turn, then returns to the summary
#: (one entry instead of four keeps the list within WhatsApp's 10 rows).
ADDRESS_FIELD = "address"
FIELDS = (
    "relationship",
    "occupation",
    "name",
    "nik",
    "birth_date",
    "birth_place",
    "phone",
    ADDRESS_FIELD,
    "plan",
    "first_month",
)
#: The draft key each required answer is kept under, by the step that asks it, in
#: the flow's order: a draft parked before a step existed (or a returned enrollment
#: from before it was asked) is sent to that step before it can be sent to the PIC.
REQUIRED_ANSWERS = (
    ("relationship", "relationship"),
    ("occupation", "occupation"),
    ("birth_place", "birth_place"),
    ("street_address", "street_address"),
    ("village", "village"),
    ("district", "district"),
    ("regency", "regency"),
)


def first_missing(ctx: Context) -> str | None:
    """The step of the first required answer the draft lacks, or None when complete."""
    data = ctx.state.data
    for step, key in REQUIRED_ANSWERS:
        if not data.get(key) or data[key] == Occupation.FAMILY_MEMBER.value:
            return step
    if data.get("occupation") == Occupation.OTHER.value and not data.get("occupation_text"):
        return OccupationOtherStep.name
    return None


def missing_notice(ctx: Context, step: str) -> str:
    """What to say when the summary sends the person to a step still unanswered."""
    return ctx.t("enroll.missing_field", field=ctx.t(f"enroll.field.{step}"))


def _summary_options(ctx: Context) -> tuple[Option, ...]:
    return (
        ctx.option("confirm", ctx.t("summary.send_to_pic")),
        ctx.option("edit", ctx.t("summary.edit")),
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
        missing = "-"
        text = t(
            "enroll.summary",
            relationship=t(f"relationship.{data['relationship']}")
            if data.get("relationship")
            else missing,
            occupation=work_label(t, data.get("occupation"), data.get("occupation_text")),
            name=data["full_name"],
            nik=data["nik_masked"],
            birth_date=t.date(birth),
            birth_note=t("enroll.summary.birth_differs") if data.get("birth_date_differs") else "",
            birth_place=data.get("birth_place") or missing,
            sex=t(f"sex.{data['sex']}"),
            phone=display_phone(data["worker_phone"])
            if data.get("worker_phone")
            else t("enroll.summary.no_phone"),
            street_address=data.get("street_address") or missing,
            village=data.get("village") or missing,
            district=data.get("district") or missing,
            regency=data.get("regency") or missing,
            plan=t(f"plan.{plan.value}"),
            amount=t.money(_plan_amount(ctx, plan, first_month)),
            first_month=t.month(first_month),
        )
        return [Reply(text, options=_summary_options(ctx))]

    async def options(self, ctx: Context) -> tuple[Option, ...]:
        # The summary's text (every answer formatted) is rendered only to ask again.
        return _summary_options(ctx)

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        if answer.choice == "edit":
            return Goto(EditStep.name)
        missing = first_missing(ctx)
        if missing is not None:
            ctx.state.data["_editing"] = True
            return Goto(missing, notice=missing_notice(ctx, missing))
        asn, open_count = await ctx.asn_and_open_count()
        if asn is None:
            return Done([Reply(ctx.t("enroll.register_first"))])
        limit = ctx.config.max_workers_per_asn
        if open_count >= limit:
            contact = await staffing.contact(ctx, asn.opd_id, asn.opd_name)
            return Done([Reply(ctx.t("enroll.limit_reached", max=limit, contact=contact))])
        data = ctx.state.data
        nik = _nik_of(ctx)
        known_worker = await ctx.repo.workers.id_by_nik(nik)
        if known_worker is not None:
            existing = await ctx.repo.sponsorships.open_for_worker(known_worker)
            if existing is not None:
                # Enrolled by someone else since the NIK step; retyping returns here.
                data["_editing"] = True
                return await refuse_nik(ctx, str(data["nik_masked"]), existing)
        plan = PaymentPlan(str(data["plan"]))
        # Asked on WhatsApp (below, once written), or else by the link this step shows:
        # then the row is written pending and asked by link at once (no UPDATE after it).
        phone = data.get("worker_phone")
        on_whatsapp = ctx.notices.asks_for_consent(str(phone) if phone else None)
        consent_state = WorkerConsent.NOT_REQUESTED if on_whatsapp else WorkerConsent.PENDING

        async def add_sponsorship(worker_id: int) -> int:
            return await ctx.repo.sponsorships.add(
                worker_id=worker_id,
                asn_id=asn.id,
                opd_id=asn.opd_id,
                occupation=Occupation(str(data["occupation"])),
                occupation_text=occupation_text(data),
                relationship=Relationship(str(data["relationship"])),
                plan=plan,
                first_month=date.fromisoformat(str(data["first_month"])),
                # On WhatsApp: becomes pending below when the request goes out (PRODUCT 4.6).
                worker_consent=consent_state,
                consent_requested_via=None if on_whatsapp else ConsentMethod.TELEGRAM_LINK,
                birth_date_differs_from_nik=bool(data.get("birth_date_differs")),
                now=ctx.now,
            )

        if known_worker is None:
            # A new worker. Should another ASN have enrolled the NIK since the look-up,
            # the insert writes nothing (and there is nothing to undo); and nobody can
            # enroll a worker this transaction has not committed: no savepoint needed.
            new_worker = await add_new_worker(ctx, nik)
            if new_worker is None:
                contact = await staffing.contact(ctx, asn.opd_id, asn.opd_name)
                return Invalid(ctx.t("enroll.nik_taken_just_now", contact=contact))
            sponsorship_id = await add_sponsorship(new_worker)
        else:
            try:
                # A savepoint on the connection (both writes are Core): the worker's
                # refresh goes too should their enrollment by another ASN, committed
                # since the check above, refuse the insert.
                async with ctx.repo.connection.begin_nested():
                    await save_worker(ctx, known_worker, nik)
                    sponsorship_id = await add_sponsorship(known_worker)
            except IntegrityError:
                # Another ASN enrolled the same NIK a moment ago (unique open sponsorship).
                contact = await staffing.contact(ctx, asn.opd_id, asn.opd_name)
                return Invalid(ctx.t("enroll.nik_taken_just_now", contact=contact))
        if plan is PaymentPlan.PAYROLL_DEDUCTION:
            await _record_payroll_statement(ctx, asn.id, sponsorship_id)
        name = str(data["full_name"])
        replies = [Reply(await staffing.queued_text(ctx, name, asn.opd_id, asn.opd_name))]
        if on_whatsapp and await ctx.notices.consent_request(
            ctx.repo.connection, sponsorship_id, now=ctx.now
        ):
            # A worker without WhatsApp on that number can still consent (PRODUCT 4.6).
            text = ctx.t("enroll.consent_requested", name=name)
            replies.append(Reply(text, options=consent.ways_options(ctx, sponsorship_id)))
        else:
            replies.append(
                await consent.link_reply(
                    ctx, sponsorship_id, name, with_back=False, requested_already=not on_whatsapp
                )
            )
        return Done(replies, sent_key="flow.already_sent.enrollment")


def _draft_worker(ctx: Context, nik: str) -> dict[str, Any]:
    """The draft's worker fields, as the worker repository takes them."""
    data = ctx.state.data
    return {
        "nik": nik,
        "nik_masked": str(data["nik_masked"]),
        "full_name": str(data["full_name"]),
        "birth_date": date.fromisoformat(str(data["birth_date"])),
        "sex": Sex(str(data["sex"])),
        "phone_e164": data.get("worker_phone"),
        "birth_place": str(data["birth_place"]),
        "street_address": str(data["street_address"]),
        "village": str(data["village"]),
        "district": str(data["district"]),
        "regency": str(data["regency"]),
        "now": ctx.now,
    }


async def save_worker(ctx: Context, existing: int | None, nik: str) -> int:
    """Write the draft's worker fields (a new worker, or the worker whose id is `existing`
    refreshed); its id."""
    return await ctx.repo.workers.upsert(existing, **_draft_worker(ctx, nik))


async def add_new_worker(ctx: Context, nik: str) -> int | None:
    """Insert the draft's worker; its id, or None when the NIK was taken meanwhile."""
    return await ctx.repo.workers.add_if_new(**_draft_worker(ctx, nik))


def occupation_text(data: dict[str, object]) -> str | None:
    """The typed occupation, kept only with "other"."""
    if data.get("occupation") != Occupation.OTHER.value:
        return None
    return str(data["occupation_text"])


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

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        data = ctx.state.data
        data.pop(ADDRESS_EDIT, None)
        if answer.choice == ADDRESS_FIELD:
            # Street, village, district, regency in order; the regency returns to the summary.
            data.pop("_editing", None)
            data[ADDRESS_EDIT] = True
            return Goto(StreetStep.name)
        return await super().handle(ctx, answer)


class EnrollmentFlow(Flow):
    name = "enrollment"
    title_key = "flow.title.enrollment"
    steps = (
        RelationshipStep(),
        OccupationStep(),
        OccupationOtherStep(),
        NameStep(),
        NikStep(),
        NikTakenStep(),
        BirthDateStep(),
        BirthDateMismatchStep(),
        AgeRefusedStep(),
        BirthPlaceStep(),
        WorkerPhoneStep(),
        StreetStep(),
        VillageStep(),
        DistrictStep(),
        RegencyStep(),
        PlanStep(),
        PayrollStatementStep(),
        FirstMonthStep(),
        SummaryStep(),
        EditStep(),
    )

    async def leave(self, ctx: Context) -> Reply:
        return await menus.main_menu(ctx)

    async def can_start(self, ctx: Context) -> str | None:
        asn, open_count = await ctx.asn_and_open_count()
        if asn is None:
            return ctx.t("enroll.register_first")
        limit = ctx.config.max_workers_per_asn
        if open_count >= limit:
            contact = await staffing.contact(ctx, asn.opd_id, asn.opd_name)
            return ctx.t("enroll.limit_reached", max=limit, contact=contact)
        return None
