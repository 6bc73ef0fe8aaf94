"""SPEC 4.4: the ASN records a payment of dues; the PIC confirms or rejects it.

Which worker (when several pay dues) -> how many months, starting at the first
unpaid month, the amount computed from the tariff and shown -> the amount paid
(the computed one, or typed and checked) -> a receipt photo or document, or
none -> confirm. The payment then waits for the PIC; paid-until moves only
when it is confirmed. Payroll-deduction sponsorships are marked paid by the
PIC for the whole OPD, so they are not offered here.
"""

from __future__ import annotations

import re
from datetime import date

from sqlalchemy import select

from domain.dues import (
    DuesStatus,
    check_payment,
    dues_status,
    first_unpaid_month,
    plan_in_force,
)
from domain.months import add_months
from domain.tariff import FundingSource
from domain.vocabulary import PaymentPlan, SponsorshipStatus
from handlers.context import Context
from handlers.flow import Answer, Done, Flow, Goto, Invalid, Next, Outcome, Step
from handlers.types import Reply
from storage import payments
from storage.models import Sponsorship, Worker

#: Months a payment may cover, offered as buttons (bounded by the prepayment limit).
MONTH_CHOICES = (1, 3, 6, 12)
_DIGITS = re.compile(r"\D+")


def paid_by_asn(sponsorship: Sponsorship, paid: set[date]) -> bool:
    """True when the ASN pays the next unpaid month: the plan in force for it (a pending
    change included) is not payroll deduction, which the PIC marks paid for the OPD."""
    month = first_unpaid_month(sponsorship.first_month, paid)
    plan = plan_in_force(
        month,
        plan=sponsorship.plan,
        next_plan=sponsorship.next_plan,
        next_plan_from=sponsorship.next_plan_from,
    )
    return plan is not PaymentPlan.PAYROLL_DEDUCTION


async def _payable(ctx: Context) -> list[tuple[int, str, str | None]]:
    """(sponsorship id, worker name, KPJ) of the ASN's dues-bearing sponsorships whose next
    month the ASN pays (`paid_by_asn`)."""
    asn = await ctx.asn()
    if asn is None:
        return []
    rows = (
        await ctx.repo.session.execute(
            select(Sponsorship, Worker.full_name)
            .join(Worker, Worker.id == Sponsorship.worker_id)
            .where(
                Sponsorship.asn_id == asn.id,
                Sponsorship.status.in_(payments.DUES_BEARING),
            )
            .order_by(Sponsorship.id)
        )
    ).all()
    paid = await payments.paid_months(ctx.repo.connection, [row[0].id for row in rows])
    return [
        (sponsorship.id, str(name), sponsorship.kpj)
        for sponsorship, name in rows
        if paid_by_asn(sponsorship, paid[sponsorship.id])
    ]


async def _sponsorship(ctx: Context) -> Sponsorship:
    sid = int(str(ctx.state.data["sid"]))
    row = await ctx.repo.session.get(Sponsorship, sid)
    assert row is not None
    return row


def dues_of(ctx: Context, sponsorship: Sponsorship, paid: set[date]) -> DuesStatus:
    """The sponsorship's dues as of today, from its confirmed months `paid`."""
    return dues_status(
        first_month=sponsorship.first_month,
        plan=sponsorship.plan,
        funding=sponsorship.funding_source,
        paid_months=paid,
        today=ctx.today,
        calendar=ctx.config.calendar,
        tariff=ctx.config.tariff,
        next_plan=sponsorship.next_plan,
        next_plan_from=sponsorship.next_plan_from,
    )


async def confirmed_months(ctx: Context, sponsorship: Sponsorship) -> set[date]:
    return (await payments.paid_months(ctx.repo.connection, [sponsorship.id]))[sponsorship.id]


async def status_of(ctx: Context, sponsorship: Sponsorship) -> DuesStatus:
    return dues_of(ctx, sponsorship, await confirmed_months(ctx, sponsorship))


def amount_for(ctx: Context, first: date, months: int, funding: FundingSource) -> int:
    return ctx.config.tariff.dues_for_months(first, months, funding=funding)


class WorkerStep(Step):
    name = "worker"
    help_key = "pay.help.worker"
    free_text = False

    def applies(self, ctx: Context) -> bool:
        return "sid" not in ctx.state.data

    async def ask(self, ctx: Context) -> list[Reply]:
        options = tuple(
            ctx.option(str(sid), ctx.t("pay.worker_option", name=name, kpj=kpj or "-"))
            for sid, name, kpj in await _payable(ctx)
        )
        return [Reply(ctx.t("pay.ask_worker"), options=options)]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        ctx.state.data["sid"] = int(answer.choice or 0)
        return Next()


class MonthsStep(Step):
    name = "months"
    help_key = "pay.help.months"
    # "3" typed is three months, not the third button (six months).
    numbers_are_values = True

    async def ask(self, ctx: Context) -> list[Reply]:
        sponsorship = await _sponsorship(ctx)
        status = await status_of(ctx, sponsorship)
        t = ctx.t
        text = t(
            "pay.status",
            paid_until=t.month(status.paid_until) if status.paid_until else t("pay.nothing_paid"),
            next_month=t.month(status.next_month),
            due=t.date(status.next_due_date),
            arrears=status.months_in_arrears,
        )
        options = tuple(
            ctx.option(
                str(count),
                t(
                    "pay.months_option",
                    count=count,
                    first=t.month(status.next_month),
                    last=t.month(add_months(status.next_month, count - 1)),
                    amount=t.money(
                        amount_for(ctx, status.next_month, count, sponsorship.funding_source)
                    ),
                ),
            )
            for count in MONTH_CHOICES
            if add_months(status.next_month, count - 1)
            <= add_months(ctx.today.replace(day=1), ctx.config.max_months_ahead)
        )
        return [Reply(text + "\n\n" + t("pay.ask_months"), options=options)]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        typed = answer.choice or _DIGITS.sub("", answer.text or "")
        if not typed.isdigit() or not 1 <= int(typed) <= 24:
            return Invalid(ctx.t("pay.months_invalid"))
        count = int(typed)
        sponsorship = await _sponsorship(ctx)
        paid = await confirmed_months(ctx, sponsorship)
        status = dues_of(ctx, sponsorship, paid)
        months = [add_months(status.next_month, i) for i in range(count)]
        problem = check_payment(
            months=months,
            status=sponsorship.status,
            paid_months=paid,
            today=ctx.today,
            max_months_ahead=ctx.config.max_months_ahead,
            typed_amount=None,
            expected_amount=0,
            first_month=sponsorship.first_month,
        )
        if problem is not None:
            return Invalid(ctx.t(f"pay.problem.{problem.value}", max=ctx.config.max_months_ahead))
        waiting = await payments.recorded_months(ctx.repo.connection, sponsorship.id)
        if any(month in waiting for month in months):
            return Invalid(ctx.t("pay.already_recorded"))
        ctx.state.data.update(
            first=status.next_month.isoformat(),
            months=count,
            expected=amount_for(ctx, status.next_month, count, sponsorship.funding_source),
        )
        return Next()


class AmountStep(Step):
    name = "amount"
    help_key = "pay.help.amount"

    async def ask(self, ctx: Context) -> list[Reply]:
        expected = int(str(ctx.state.data["expected"]))
        return [
            Reply(
                ctx.t("pay.ask_amount", amount=ctx.t.money(expected)),
                options=(
                    ctx.option("exact", ctx.t("pay.amount_exact", amount=ctx.t.money(expected))),
                ),
            )
        ]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        expected = int(str(ctx.state.data["expected"]))
        if answer.choice != "exact":
            digits = _DIGITS.sub("", (answer.text or "").split(",")[0])
            if not digits:
                return Invalid(ctx.t("pay.amount_invalid"))
            if int(digits) != expected:
                return Invalid(
                    ctx.t(
                        "pay.problem.amount_mismatch",
                        typed=ctx.t.money(int(digits)),
                        amount=ctx.t.money(expected),
                    )
                )
        ctx.state.data["amount"] = expected
        return Next()


class ReceiptStep(Step):
    name = "receipt"
    help_key = "pay.help.receipt"
    accepts_files = True

    async def ask(self, ctx: Context) -> list[Reply]:
        return [
            Reply(
                ctx.t("pay.ask_receipt"),
                options=(ctx.option("skip", ctx.t("pay.receipt_skip")),),
            )
        ]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        if answer.choice == "skip":
            ctx.state.data["receipt"] = None
            return Next()
        if answer.file_ref is None:
            return Invalid(ctx.t("pay.receipt_invalid"))
        ctx.state.data["receipt"] = answer.file_ref
        return Next()


class ConfirmStep(Step):
    name = "confirm"
    help_key = "pay.help.confirm"
    free_text = False

    async def ask(self, ctx: Context) -> list[Reply]:
        data, t = ctx.state.data, ctx.t
        first = date.fromisoformat(str(data["first"]))
        count = int(str(data["months"]))
        sponsorship = await _sponsorship(ctx)
        worker = await ctx.repo.session.get(Worker, sponsorship.worker_id)
        text = t(
            "pay.summary",
            name=worker.full_name if worker else "",
            first=t.month(first),
            last=t.month(add_months(first, count - 1)),
            count=count,
            amount=t.money(int(str(data["amount"]))),
            receipt=t("pay.receipt_yes") if data.get("receipt") else t("pay.receipt_no"),
        )
        return [
            Reply(
                text,
                options=(
                    ctx.option("confirm", t("pay.confirm")),
                    ctx.option("months", t("pay.change_months")),
                ),
            )
        ]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        if answer.choice == "months":
            return Goto(MonthsStep.name)
        data = ctx.state.data
        sponsorship = await _sponsorship(ctx)
        if sponsorship.status not in payments.DUES_BEARING:
            return Done([Reply(ctx.t("pay.problem.not_active"))])
        first = date.fromisoformat(str(data["first"]))
        count = int(str(data["months"]))
        waiting = await payments.recorded_months(ctx.repo.connection, sponsorship.id)
        if any(add_months(first, i) in waiting for i in range(count)):
            return Done([Reply(ctx.t("pay.already_recorded"))])
        await payments.record(
            ctx.repo.connection,
            sponsorship_id=sponsorship.id,
            first_month=first,
            months=count,
            amount=int(str(data["amount"])),
            receipt_file_ref=data.get("receipt"),
            account_id=ctx.account.id,
            now=ctx.now,
        )
        await ctx.notices.payment_recorded(
            ctx.repo.connection, sponsorship.id, [add_months(first, i) for i in range(count)]
        )
        return Done([Reply(ctx.t("pay.done"))])


class PaymentFlow(Flow):
    name = "payment"
    title_key = "flow.title.payment"
    steps = (WorkerStep(), MonthsStep(), AmountStep(), ReceiptStep(), ConfirmStep())

    async def can_start(self, ctx: Context) -> str | None:
        if await ctx.asn() is None:
            return ctx.t("workers.not_registered")
        if not await _payable(ctx):
            asn = await ctx.asn()
            assert asn is not None
            lapsed = await ctx.repo.connection.scalar(
                select(Sponsorship.id).where(
                    Sponsorship.asn_id == asn.id, Sponsorship.status == SponsorshipStatus.LAPSED
                )
            )
            return ctx.t("pay.problem.lapsed" if lapsed else "pay.nothing_to_pay")
        return None

    async def initial_data(self, ctx: Context) -> dict[str, object]:
        # One worker to pay for: the worker question is skipped.
        payable = await _payable(ctx)
        return {"sid": payable[0][0]} if len(payable) == 1 else {}
