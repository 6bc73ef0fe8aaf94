"""PRODUCT 4.3: the ASN changes how a worker's dues are paid, from the next period on.

A change never splits a period already paid for: it takes effect from the
first month not yet paid (`domain.dues.plan_change_from`; months recorded and
waiting for the PIC count as paid), which the ASN is told before confirming.
Choosing payroll deduction asks for the statement of willingness first
(recorded with its text version, time and channel).
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import select, update

from domain.dues import plan_change_from
from domain.tariff import FundingSource
from domain.vocabulary import ConsentPurpose, ConsentSubject, PaymentPlan
from handlers import menus
from handlers.context import Context
from handlers.flow import Answer, Done, Flow, Goto, Outcome, Step
from handlers.flows.common import WhichSponsorshipStep
from handlers.flows.enrollment import PAYROLL_STATEMENT_VERSION, PayrollStatementStep
from handlers.flows.payment import next_payment_of
from handlers.types import Reply
from storage import payments
from storage.models import Sponsorship, Worker


async def _changeable(ctx: Context) -> list[tuple[int, str, PaymentPlan]]:
    asn = await ctx.asn()
    if asn is None:
        return []
    rows = await ctx.repo.connection.execute(
        select(Sponsorship.id, Worker.full_name, Sponsorship.plan)
        .join(Worker, Worker.id == Sponsorship.worker_id)
        .where(Sponsorship.asn_id == asn.id, Sponsorship.status.in_(payments.DUES_BEARING))
        .order_by(Sponsorship.id)
    )
    return [(int(sid), str(name), PaymentPlan(plan)) for sid, name, plan in rows]


async def _sponsorship(ctx: Context) -> Sponsorship:
    row = await ctx.repo.session.get(Sponsorship, int(str(ctx.state.data["sid"])))
    assert row is not None
    return row


class WhichStep(WhichSponsorshipStep):
    help_key = "plan_change.help"
    prompt_key = "pay.ask_worker"

    async def choices(self, ctx: Context) -> list[tuple[int, str]]:
        return [
            (sid, ctx.t("plan_change.worker", name=name, plan=ctx.t(f"plan.{plan.value}")))
            for sid, name, plan in await _changeable(ctx)
        ]


class NewPlanStep(Step):
    name = "new_plan"
    help_key = "plan_change.help"
    free_text = False

    async def ask(self, ctx: Context) -> list[Reply]:
        sponsorship = await _sponsorship(ctx)
        options = tuple(
            ctx.option(plan.value, ctx.t(f"plan.{plan.value}"))
            for plan in ctx.config.plans
            if plan is not sponsorship.plan
        )
        text = ctx.t("plan_change.ask", plan=ctx.t(f"plan.{sponsorship.plan.value}"))
        return [Reply(text, options=options)]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        plan = PaymentPlan(answer.choice or "")
        ctx.state.data["plan"] = plan.value
        if plan is PaymentPlan.PAYROLL_DEDUCTION:
            return Goto(StatementStep.name)
        ctx.state.data.pop("payroll_agreed_at", None)
        return Goto(ConfirmChangeStep.name)


class StatementStep(PayrollStatementStep):
    """The statement of willingness, naming the deduction from the change's first month."""

    name = "statement"
    plan_step = "new_plan"

    async def monthly_amount(self, ctx: Context) -> int:
        sponsorship = await _sponsorship(ctx)
        status = await next_payment_of(ctx, sponsorship)
        return ctx.config.tariff.dues_for_months(
            plan_change_from(status), 1, funding=FundingSource.PAYROLL_DEDUCTION
        )


class ConfirmChangeStep(Step):
    name = "confirm_change"
    help_key = "plan_change.help"
    free_text = False

    async def ask(self, ctx: Context) -> list[Reply]:
        sponsorship = await _sponsorship(ctx)
        status = await next_payment_of(ctx, sponsorship)
        start = plan_change_from(status)
        key = "plan_change.confirm_after_paid" if status.paid_until else "plan_change.confirm"
        text = ctx.t(
            key,
            plan=ctx.t(f"plan.{ctx.state.data['plan']}"),
            month=ctx.t.month(start),
            paid_until=ctx.t.month(status.paid_until) if status.paid_until else "",
        )
        return [
            Reply(
                text,
                options=(
                    ctx.option("confirm", ctx.t("plan_change.do")),
                    ctx.option("other", ctx.t("plan_change.other")),
                ),
            )
        ]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        if answer.choice == "other":
            return Goto(NewPlanStep.name)
        sponsorship = await _sponsorship(ctx)
        status = await next_payment_of(ctx, sponsorship)
        start: date = plan_change_from(status)
        plan = PaymentPlan(str(ctx.state.data["plan"]))
        funding = (
            FundingSource.PAYROLL_DEDUCTION
            if plan is PaymentPlan.PAYROLL_DEDUCTION
            else FundingSource.ASN_PERSONAL
        )
        await ctx.repo.connection.execute(
            update(Sponsorship)
            .where(Sponsorship.id == sponsorship.id)
            .values(next_plan=plan, next_plan_from=start, funding_source=funding)
        )
        if plan is PaymentPlan.PAYROLL_DEDUCTION:
            asn = await ctx.asn()
            assert asn is not None
            await ctx.repo.consents.record(
                subject=ConsentSubject.ASN,
                subject_id=asn.id,
                purpose=ConsentPurpose.PAYROLL_DEDUCTION,
                text_version=PAYROLL_STATEMENT_VERSION,
                granted=True,
                channel=ctx.event.channel,
                channel_account_id=ctx.account.id,
                sponsorship_id=sponsorship.id,
                recorded_at=ctx.now,
            )
        text = ctx.t("plan_change.done", plan=ctx.t(f"plan.{plan.value}"), month=ctx.t.month(start))
        return Done([Reply(text)])


class PlanChangeFlow(Flow):
    name = "plan_change"
    title_key = "flow.title.plan_change"
    steps = (WhichStep(), NewPlanStep(), StatementStep(), ConfirmChangeStep())

    async def leave(self, ctx: Context) -> Reply:
        return await menus.main_menu(ctx)

    async def can_start(self, ctx: Context) -> str | None:
        if not await _changeable(ctx):
            return ctx.t("pay.nothing_to_pay")
        return None

    async def initial_data(self, ctx: Context) -> dict[str, object]:
        changeable = await _changeable(ctx)
        return {"sid": changeable[0][0]} if len(changeable) == 1 else {}
