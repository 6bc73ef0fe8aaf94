"""The ASN stops sponsoring a worker (PRODUCT 4.3 "stop sponsoring").

Which worker (when there are several), why (a common reason or typed), then a
confirmation that says which month is the last one covered: the last month
paid or recorded (a payment waiting for the PIC counts). Nothing changes until
the ASN confirms; then the sponsorship ends (`storage.sponsorship_end`), its
unsent reminders go, the PICs and the worker are told through the outbox, and
the end is audited. The worker stays protected to the end of the last covered
month; the PIC reports the end to BPJS.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import select

from domain.vocabulary import OPEN_STATUSES, PaymentPlan, SponsorshipStatus
from handlers import menus
from handlers.context import Context
from handlers.flow import Answer, Done, Flow, Invalid, Next, Outcome, Step
from handlers.flows.common import WhichSponsorshipStep
from handlers.i18n import Translator
from handlers.parsing import TextProblem, parse_note
from handlers.types import Reply
from storage import payments
from storage.models import Sponsorship, Worker
from storage.sponsorship_end import END_REASONS, end_sponsorship, last_covered_month


async def _stoppable(ctx: Context) -> list[tuple[int, str, SponsorshipStatus]]:
    """The ASN's open sponsorships: (id, worker name, status), oldest first."""
    asn = await ctx.asn()
    if asn is None:
        return []
    rows = await ctx.repo.connection.execute(
        select(Sponsorship.id, Worker.full_name, Sponsorship.status)
        .join(Worker, Worker.id == Sponsorship.worker_id)
        .where(Sponsorship.asn_id == asn.id, Sponsorship.status.in_(OPEN_STATUSES))
        .order_by(Sponsorship.id)
    )
    return [(int(sid), str(name), SponsorshipStatus(status)) for sid, name, status in rows]


def reason_text(t: Translator, code: str | None, typed: str | None) -> str:
    """The ASN's reason in `t`'s language: a common one by its code, or the typed text."""
    if code is not None:
        return t(f"stop.reason.{code}")
    return typed or "-"


class WhichWorkerStep(WhichSponsorshipStep):
    help_key = "stop.help"
    prompt_key = "stop.ask_worker"

    async def choices(self, ctx: Context) -> list[tuple[int, str]]:
        return [
            (sid, ctx.t("stop.worker_option", name=name, status=ctx.t(f"status.{status.value}")))
            for sid, name, status in await _stoppable(ctx)
        ]


class ReasonStep(Step):
    name = "reason"
    help_key = "stop.help"

    async def ask(self, ctx: Context) -> list[Reply]:
        name = await _worker_name(ctx)
        options = tuple(ctx.option(code, ctx.t(f"stop.reason.{code}")) for code in END_REASONS)
        return [Reply(ctx.t("stop.ask_reason", name=name), options=options)]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        if answer.choice is not None:
            ctx.state.data.update(reason_code=answer.choice, reason=None)
            return Next()
        typed = parse_note(answer.text or "")
        if isinstance(typed, TextProblem):
            return Invalid(ctx.t("stop.reason_invalid"))
        ctx.state.data.update(reason_code=None, reason=typed)
        return Next()


class ConfirmStopStep(Step):
    name = "confirm"
    help_key = "stop.help"
    free_text = False

    async def ask(self, ctx: Context) -> list[Reply]:
        t = ctx.t
        sponsorship = await _sponsorship(ctx)
        if sponsorship is None:
            return [Reply(t("stop.gone"), options=(ctx.option("keep", t("stop.keep")),))]
        connection = ctx.repo.connection
        last = await last_covered_month(connection, sponsorship.id, sponsorship.first_month)
        end = _end_text(ctx, sponsorship, last)
        if last is None and sponsorship.status in payments.DUES_BEARING:
            # Advice that only helps before the stop: the done message leaves it out.
            end += " " + t("stop.end.pay_first")
        text = t(
            "stop.confirm",
            name=sponsorship.worker.full_name,
            reason=reason_text(t, _code(ctx), _typed(ctx)),
            end=end,
        )
        if sponsorship.plan is PaymentPlan.PAYROLL_DEDUCTION or sponsorship.next_plan is (
            PaymentPlan.PAYROLL_DEDUCTION
        ):
            text += "\n\n" + t("stop.payroll_note")
        return [
            Reply(
                text,
                options=(
                    ctx.option("stop", t("stop.do")),
                    ctx.option("keep", t("stop.keep")),
                ),
            )
        ]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        t = ctx.t
        if answer.choice != "stop":
            return Done([Reply(t("stop.kept"))])
        asn = await ctx.asn()
        sponsorship = await _sponsorship(ctx)
        if asn is None or sponsorship is None:
            return Done([Reply(t("stop.gone"))])
        code, typed = _code(ctx), _typed(ctx)
        ended = await end_sponsorship(
            ctx.repo.connection,
            sponsorship_id=sponsorship.id,
            asn_id=asn.id,
            account_id=ctx.account.id,
            reason_code=code,
            reason_text=typed,
            now=ctx.now,
        )
        if ended is None:
            return Done([Reply(t("stop.gone"))])
        await ctx.notices.sponsorship_ended(
            ctx.repo.connection,
            sponsorship.id,
            ended_month=ended.ended_month,
            reason=lambda translator: reason_text(translator, code, typed),
            now=ctx.now,
        )
        text = t(
            "stop.done",
            name=sponsorship.worker.full_name,
            end=_end_text(ctx, sponsorship, ended.ended_month),
        )
        return Done([Reply(text)])


def _code(ctx: Context) -> str | None:
    code = ctx.state.data.get("reason_code")
    return str(code) if code in END_REASONS else None


def _typed(ctx: Context) -> str | None:
    typed = ctx.state.data.get("reason")
    return str(typed) if typed else None


async def _sponsorship(ctx: Context) -> Sponsorship | None:
    """The chosen sponsorship with its worker, if it is still this ASN's and open."""
    asn = await ctx.asn()
    if asn is None:
        return None
    for sponsorship in await ctx.repo.sponsorships.list_for_asn(asn.id):
        if sponsorship.id == ctx.state.data.get("sid") and sponsorship.status.is_open:
            return sponsorship
    return None


async def _worker_name(ctx: Context) -> str:
    sponsorship = await _sponsorship(ctx)
    return sponsorship.worker.full_name if sponsorship is not None else "-"


def _end_text(ctx: Context, sponsorship: Sponsorship, last: date | None) -> str:
    """What ending means for this sponsorship: before the card, nothing was due; after,
    protection runs to the end of the last covered month (or there is none)."""
    t = ctx.t
    if sponsorship.status not in payments.DUES_BEARING:
        return t("stop.end.before_card")
    if last is None:
        return t("stop.end.nothing_paid")
    return t("stop.end.until", month=t.month(last))


class StopSponsoringFlow(Flow):
    name = "stop_sponsoring"
    title_key = "flow.title.stop_sponsoring"
    steps = (WhichWorkerStep(), ReasonStep(), ConfirmStopStep())

    async def leave(self, ctx: Context) -> Reply:
        return await menus.main_menu(ctx)

    async def can_start(self, ctx: Context) -> str | None:
        if await ctx.asn() is None:
            return ctx.t("workers.not_registered")
        if not await _stoppable(ctx):
            return ctx.t("stop.nothing")
        return None

    async def initial_data(self, ctx: Context) -> dict[str, object]:
        stoppable = await _stoppable(ctx)
        return {"sid": stoppable[0][0]} if len(stoppable) == 1 else {}
