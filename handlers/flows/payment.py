"""PRODUCT 4.4: the ASN records a payment of dues for one or several workers; the PIC confirms
or rejects each.

Which workers (when several pay dues: one, all, or a typed list such as "1 3")
-> how many months, each worker from their own first unpaid month, the amounts
computed from the tariff and shown -> the amount paid (the computed total, or
typed and checked against it) -> one receipt photo or document for the lot, or
none -> confirm. Each worker's part is then one payment waiting for the PIC;
paid-until moves only when it is confirmed. Payroll-deduction sponsorships are
marked paid by the PIC for the whole OPD, so they are not offered here.

Months for several workers follow `domain.dues.one_month_count`: one count is
asked for all when their plans in force ask the same number of months next
(all monthly, all quarterly), otherwise each pays its own plan's next payment
and no count is asked. Every rule of `domain.dues.check_payment`, and months
already waiting for the PIC, is checked per worker: for one worker the months
question says what is wrong, as before; for several, and whenever the last step
finds that something changed meanwhile (another device, another process), the
"fix" question names each worker and month and offers to go on without them,
change the months or choose the workers again, keeping everything else.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from datetime import date

from sqlalchemy import bindparam, select

from domain.dues import (
    DuesStatus,
    PaymentProblem,
    check_payment,
    dues_status,
    first_unpaid_month,
    one_month_count,
    plan_in_force,
)
from domain.months import add_months, month_start
from domain.tariff import FundingSource
from domain.vocabulary import Channel, PaymentPlan, SponsorshipStatus
from handlers.context import Context
from handlers.flow import Answer, Done, Flow, Goto, Invalid, Next, Outcome, Step
from handlers.parsing import ascii_int, match_option, split_list
from handlers.types import EventKind, FileRef, Option, Reply
from storage import payments
from storage.models import Sponsorship, Worker
from storage.payments import PaymentLine

#: Months a payment may cover, offered as buttons (bounded by the prepayment limit).
MONTH_CHOICES = (1, 3, 6, 12)
#: The option that chooses every payable worker.
ALL_WORKERS = "all"
#: Months already recorded and waiting for the PIC: not a rule of `check_payment`,
#: which sees confirmed months only, but a payment cannot cover them twice either.
ALREADY_RECORDED = "already_recorded"
#: A month from which a plan change to payroll deduction is in force: the OPD's
#: treasurer pays it (the PIC marks it), so the ASN paying it too would pay twice.
PAYROLL_MONTH = "payroll_month"
#: What is dropped from a typed count or amount ("3 bulan", "Rp16.800"): all but 0-9.
_NOT_DIGITS = re.compile(r"[^0-9]+")
#: Longest typed amount read (a trillion rupiah); a longer one is not an amount.
_AMOUNT_DIGITS = 13


def plan_of(sponsorship: Sponsorship, paid: set[date]) -> PaymentPlan:
    """The plan the sponsorship's next payment is made under: the plan in force for its
    first unpaid month (`domain.dues.plan_in_force`, a pending change included)."""
    return plan_in_force(
        first_unpaid_month(sponsorship.first_month, paid),
        plan=sponsorship.plan,
        next_plan=sponsorship.next_plan,
        next_plan_from=sponsorship.next_plan_from,
    )


def paid_by_asn(sponsorship: Sponsorship, paid: set[date]) -> bool:
    """True when the ASN pays the next unpaid month: its plan (`plan_of`) is not payroll
    deduction, which the PIC marks paid for the OPD."""
    return plan_of(sponsorship, paid) is not PaymentPlan.PAYROLL_DEDUCTION


@dataclasses.dataclass(slots=True, frozen=True)
class _Payee:
    """A sponsorship the ASN may pay for, with its worker's name and its months so far."""

    sponsorship: Sponsorship
    name: str
    #: Confirmed months.
    paid: set[date]
    #: Months of payments recorded and waiting for the PIC.
    waiting: set[date]

    @property
    def claimed(self) -> set[date]:
        """Confirmed and waiting months: the next payment starts after both (a payment
        waiting for the PIC does not hold up the following months, which the reminders
        already ask for; a rejection makes its months the first unpaid ones again)."""
        return self.paid | self.waiting


# Built once with bind parameters: constructing a statement per call cost more
# than running it (docs/BENCHMARKS.md, stepcost and "Kirim ke PIC in 7 statements").
_PAYEES = (
    select(Sponsorship, Worker.full_name)
    .join(Worker, Worker.id == Sponsorship.worker_id)
    .where(
        Sponsorship.asn_id == bindparam("asn_id"),
        Sponsorship.status.in_(payments.DUES_BEARING),
    )
    .order_by(Sponsorship.id)
)
_PAYEES_AMONG = _PAYEES.where(Sponsorship.id.in_(bindparam("sids", expanding=True)))


async def _payees(ctx: Context, sids: Sequence[int] | None = None) -> list[_Payee]:
    """The ASN's dues-bearing sponsorships (only `sids`, when given), oldest first."""
    asn = await ctx.asn()
    if asn is None:
        return []
    params: dict[str, object]
    if sids is None:
        query, params = _PAYEES, {"asn_id": asn.id}
    else:
        query, params = _PAYEES_AMONG, {"asn_id": asn.id, "sids": list(sids)}
    rows = (await ctx.repo.session.execute(query, params)).all()
    ids = [row[0].id for row in rows]
    paid = await payments.paid_months(ctx.repo.connection, ids)
    waiting = await payments.waiting_months(ctx.repo.connection, ids)
    return [
        _Payee(sponsorship, str(name), paid[sponsorship.id], waiting[sponsorship.id])
        for sponsorship, name in rows
    ]


async def _payable(ctx: Context) -> list[_Payee]:
    """The ASN's dues-bearing sponsorships whose next month the ASN pays (`paid_by_asn`)."""
    return [payee for payee in await _payees(ctx) if paid_by_asn(payee.sponsorship, payee.claimed)]


async def has_dues_to_pay(ctx: Context) -> bool:
    """Whether the ASN pays dues for any worker themself (the main menu's "pay dues")."""
    return bool(await _payable(ctx))


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


async def next_payment_of(ctx: Context, sponsorship: Sponsorship) -> DuesStatus:
    """The sponsorship's dues as the next payment sees them: months confirmed or
    waiting for the PIC both count (`_Payee.claimed`), so a plan change never takes
    effect in a month the ASN has already paid for under the old plan."""
    connection = ctx.repo.connection
    paid = (await payments.paid_months(connection, [sponsorship.id]))[sponsorship.id]
    waiting = (await payments.waiting_months(connection, [sponsorship.id]))[sponsorship.id]
    return dues_of(ctx, sponsorship, paid | waiting)


def amount_for(ctx: Context, first: date, months: int, funding: FundingSource) -> int:
    return ctx.config.tariff.dues_for_months(first, months, funding=funding)


# -- the choice kept in the conversation ------------------------------------------------


def _chosen(ctx: Context) -> list[int]:
    """The chosen sponsorship ids (a draft parked before several workers had "sid")."""
    data = ctx.state.data
    if "sids" in data:
        return [int(sid) for sid in data["sids"]]
    return [int(str(data["sid"]))] if "sid" in data else []


def _stored(line: PaymentLine) -> list[object]:
    """One worker's part of the payment as kept in the conversation (JSON)."""
    return [line.sponsorship_id, line.first_month.isoformat(), line.months, line.amount]


def _lines(ctx: Context) -> list[PaymentLine]:
    data = ctx.state.data
    if "lines" in data:
        return [
            PaymentLine(int(sid), date.fromisoformat(first), int(months), int(amount))
            for sid, first, months, amount in data["lines"]
        ]
    if "first" in data:  # a one-worker draft parked before several workers
        return [
            PaymentLine(
                _chosen(ctx)[0],
                date.fromisoformat(str(data["first"])),
                int(str(data["months"])),
                int(str(data["expected"])),
            )
        ]
    return []


def _problem(
    ctx: Context, payee: _Payee | None, sid: int, first: date, count: int
) -> list[object] | None:
    """[sid, problem, month] when sponsorship `sid` cannot pay `count` months from `first`:
    a rule of `check_payment` or ALREADY_RECORDED, with the month concerned ("" when none).
    `payee` None: it no longer bears dues (ended or erased meanwhile)."""
    if payee is None:
        return [sid, PaymentProblem.NOT_ACTIVE.value, ""]
    months = payments.months_of(first, count)
    waiting = [month for month in months if month in payee.waiting]
    if waiting and payee.sponsorship.status in payments.DUES_BEARING:
        return [sid, ALREADY_RECORDED, waiting[0].isoformat()]
    problem = check_payment(
        months=months,
        status=payee.sponsorship.status,
        paid_months=payee.claimed,
        today=ctx.today,
        max_months_ahead=ctx.config.max_months_ahead,
        typed_amount=None,
        expected_amount=0,
        first_month=payee.sponsorship.first_month,
    )
    if problem is PaymentProblem.ALREADY_PAID:
        return [sid, problem.value, min(m for m in months if m in payee.paid).isoformat()]
    if problem is not None:
        return [sid, problem.value, ""]
    payroll = _payroll_months(payee.sponsorship, months)
    return [sid, PAYROLL_MONTH, payroll[0].isoformat()] if payroll else None


def _payroll_months(sponsorship: Sponsorship, months: Sequence[date]) -> list[date]:
    """The `months` under payroll deduction (a pending change to it in force), which the
    OPD's treasurer pays and the ASN must not."""
    return [
        month
        for month in months
        if plan_in_force(
            month,
            plan=sponsorship.plan,
            next_plan=sponsorship.next_plan,
            next_plan_from=sponsorship.next_plan_from,
        )
        is PaymentPlan.PAYROLL_DEDUCTION
    ]


def _problem_text(ctx: Context, code: str, month: str) -> str:
    t = ctx.t
    if code == ALREADY_RECORDED:
        return t("pay.problem.recorded_month", month=t.month(date.fromisoformat(month)))
    if code == PAYROLL_MONTH:
        return t("pay.problem.payroll_month", month=t.month(date.fromisoformat(month)))
    if code == PaymentProblem.ALREADY_PAID and month:
        return t("pay.problem.paid_month", month=t.month(date.fromisoformat(month)))
    return t(f"pay.problem.{code}", max=ctx.config.max_months_ahead)


async def _settle(ctx: Context, count: int | None, *, in_months_step: bool = False) -> Outcome:
    """Plan the chosen workers' parts: `count` months each from their own first unpaid
    month, or (None) each plan's next payment. Problems go to the fix question, or, for
    one worker at the months question, are said there as before."""
    data = ctx.state.data
    data.pop("amount", None)
    data.pop("problems", None)
    data.pop("lines", None)
    if count is not None:
        data["count"] = count
    lines: list[PaymentLine] = []
    problems: list[list[object]] = []
    payees = {payee.sponsorship.id: payee for payee in await _payees(ctx, _chosen(ctx))}
    for sid in _chosen(ctx):
        payee = payees.get(sid)
        status = dues_of(ctx, payee.sponsorship, payee.claimed) if payee else None
        first = status.next_month if status else ctx.today
        months = count or (status.next_months if status else 1)
        problem = _problem(ctx, payee, sid, first, months)
        if problem is not None:
            problems.append(problem)
        elif payee is not None:
            amount = amount_for(ctx, first, months, payee.sponsorship.funding_source)
            lines.append(PaymentLine(sid, first, months, amount))
    if problems:
        if in_months_step and len(_chosen(ctx)) == 1:
            _, code, month = problems[0]
            return Invalid(_problem_text(ctx, str(code), str(month)))
        data["problems"] = problems
        return Goto(FixStep.name)
    data["lines"] = [_stored(line) for line in lines]
    data["expected"] = sum(line.amount for line in lines)
    return Goto(_next_step(ctx))


async def _choose(ctx: Context, sids: Sequence[int]) -> Outcome:
    """A new choice of workers: ask one month count, or plan each by its own plan."""
    data = ctx.state.data
    for key in ("sid", "lines", "count", "amount", "problems", "first", "months"):
        data.pop(key, None)
    data["sids"] = list(sids)
    payees = await _payees(ctx, sids)
    statuses = [dues_of(ctx, payee.sponsorship, payee.claimed) for payee in payees]
    data["per_plan"] = not one_month_count([status.next_months for status in statuses])
    if data["per_plan"]:
        return await _settle(ctx, None)
    return Goto(MonthsStep.name)


async def _names(ctx: Context, sids: Sequence[int]) -> dict[int, str]:
    rows = await ctx.repo.session.execute(
        select(Sponsorship.id, Worker.full_name)
        .join(Worker, Worker.id == Sponsorship.worker_id)
        .where(Sponsorship.id.in_(list(sids)))
    )
    return {int(sid): str(name) for sid, name in rows}


def _paid_until(ctx: Context, payee: _Payee) -> str:
    """Paid-until from the confirmed months only: what waits for the PIC is not paid yet."""
    start = month_start(payee.sponsorship.first_month)
    after = first_unpaid_month(start, payee.paid)
    return ctx.t.month(add_months(after, -1)) if after > start else ctx.t("pay.nothing_paid")


def _month_range(ctx: Context, first: date, count: int) -> dict[str, object]:
    return {"months": ctx.t.months(first, add_months(first, count - 1)), "count": count}


# -- the steps ------------------------------------------------------------------------------


class WorkerStep(Step):
    name = "worker"
    help_key = "pay.help.worker"

    def applies(self, ctx: Context) -> bool:
        return not _chosen(ctx)

    async def _options(self, ctx: Context) -> tuple[list[_Payee], tuple[Option, ...]]:
        payable = await _payable(ctx)
        options = [
            ctx.option(
                str(payee.sponsorship.id),
                ctx.t("pay.worker_option", name=payee.name, kpj=payee.sponsorship.kpj or "-"),
            )
            for payee in payable
        ]
        if len(payable) > 1:
            options.append(ctx.option(ALL_WORKERS, ctx.t("pay.all_workers", count=len(payable))))
        return payable, tuple(options)

    async def ask(self, ctx: Context) -> list[Reply]:
        payable, options = await self._options(ctx)
        if len(payable) < 2:
            return [Reply(ctx.t("pay.ask_worker"), options=options)]
        # Numbered in the text too, so "1 3" means the same on buttons, lists and the console.
        workers = "\n".join(
            ctx.t(
                "pay.worker_line",
                index=index,
                name=payee.name,
                kpj=payee.sponsorship.kpj or "-",
            )
            for index, payee in enumerate(payable, start=1)
        )
        return [Reply(ctx.t("pay.ask_workers", workers=workers), options=options)]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        payable, options = await self._options(ctx)
        keys = [answer.choice] if answer.choice else []
        if not keys:
            for item in split_list(answer.text or ""):
                key = match_option(item, options)
                if key is None:
                    return Invalid(ctx.t("pay.selection_unknown", typed=item))
                keys.append(key)
        if not keys:
            return Invalid(ctx.t("input.choose_option"))
        ids = [payee.sponsorship.id for payee in payable]
        wanted = set(ids) if ALL_WORKERS in keys else {int(key) for key in keys}
        return await _choose(ctx, [sid for sid in ids if sid in wanted])


class MonthsStep(Step):
    name = "months"
    help_key = "pay.help.months"
    # "3" typed is three months, not the third button (six months).
    numbers_are_values = True

    def applies(self, ctx: Context) -> bool:
        return not ctx.state.data.get("per_plan") and "lines" not in ctx.state.data

    async def ask(self, ctx: Context) -> list[Reply]:
        t = ctx.t
        payees = await _payees(ctx, _chosen(ctx))
        statuses = [dues_of(ctx, payee.sponsorship, payee.claimed) for payee in payees]
        last_allowed = add_months(ctx.today.replace(day=1), ctx.config.max_months_ahead)
        counts = [
            count
            for count in MONTH_CHOICES
            if all(
                add_months(s.next_month, count - 1) <= last_allowed
                and not _payroll_months(p.sponsorship, payments.months_of(s.next_month, count))
                for p, s in zip(payees, statuses, strict=True)
            )
        ]

        def total(count: int) -> int:
            return sum(
                amount_for(ctx, s.next_month, count, p.sponsorship.funding_source)
                for p, s in zip(payees, statuses, strict=True)
            )

        if len(payees) == 1:
            (status,) = statuses
            text = t(
                "pay.status",
                paid_until=_paid_until(ctx, payees[0]),
                next_month=t.month(status.next_month),
                due=t.date(status.next_due_date),
                arrears=status.months_in_arrears,
            )
            options = tuple(
                ctx.option(
                    str(count),
                    t(
                        "pay.months_option",
                        **_month_range(ctx, status.next_month, count),
                        amount=t.money(total(count)),
                    ),
                )
                for count in counts
            )
            return [Reply(text + "\n\n" + t("pay.ask_months"), options=options)]
        lines = [
            t(
                "pay.worker_status",
                name=payee.name,
                paid_until=_paid_until(ctx, payee),
                next_month=t.month(status.next_month),
            )
            for payee, status in zip(payees, statuses, strict=True)
        ]
        options = tuple(
            ctx.option(
                str(count), t("pay.months_option_each", count=count, amount=t.money(total(count)))
            )
            for count in counts
        )
        return [Reply("\n".join(lines) + "\n\n" + t("pay.ask_months_each"), options=options)]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        months = ascii_int(answer.choice or _NOT_DIGITS.sub("", answer.text or ""), max_digits=2)
        if months is None or not 1 <= months <= 24:
            return Invalid(ctx.t("pay.months_invalid"))
        return await _settle(ctx, months, in_months_step=True)


class AmountStep(Step):
    name = "amount"
    help_key = "pay.help.amount"

    def applies(self, ctx: Context) -> bool:
        return "amount" not in ctx.state.data

    async def ask(self, ctx: Context) -> list[Reply]:
        expected = int(str(ctx.state.data["expected"]))
        money = ctx.t.money(expected)
        workers = len(_lines(ctx))
        text = (
            ctx.t("pay.ask_amount_total", count=workers, amount=money)
            if workers > 1
            else ctx.t("pay.ask_amount", amount=money)
        )
        return [
            Reply(text, options=(ctx.option("exact", ctx.t("pay.amount_exact", amount=money)),))
        ]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        expected = int(str(ctx.state.data["expected"]))
        if answer.choice != "exact":
            typed = ascii_int(
                _NOT_DIGITS.sub("", (answer.text or "").split(",")[0]), max_digits=_AMOUNT_DIGITS
            )
            if typed is None:
                return Invalid(ctx.t("pay.amount_invalid"))
            if typed != expected:
                return Invalid(
                    ctx.t(
                        "pay.problem.amount_mismatch",
                        typed=ctx.t.money(typed),
                        amount=ctx.t.money(expected),
                    )
                )
        ctx.state.data["amount"] = expected
        return Goto(_next_step(ctx))


class ReceiptStep(Step):
    name = "receipt"
    help_key = "pay.help.receipt"
    accepts_files = True

    def applies(self, ctx: Context) -> bool:
        # One receipt for the lot, kept when the workers or the months change.
        return "receipt" not in ctx.state.data

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
        ctx.state.data["receipt"] = stored_receipt(answer.kind, answer.file_ref)
        return Next()


#: A receipt sent as a document is stored with this prefix; a photo (and every
#: receipt stored before documents were told apart) is the bare reference.
_DOCUMENT_RECEIPT = "document:"


def stored_receipt(kind: EventKind, ref: str) -> str:
    """The `payment.receipt_file_ref` of a receipt sent as `kind` (photo or document):
    the platforms send the two differently when the PIC is shown it again."""
    return _DOCUMENT_RECEIPT + ref if kind is EventKind.DOCUMENT else ref


def receipt_file(stored: str, channel: Channel) -> FileRef:
    """The receipt stored as `stored` (`stored_receipt`), sent on `channel`."""
    if stored.startswith(_DOCUMENT_RECEIPT):
        return FileRef(channel, EventKind.DOCUMENT, stored.removeprefix(_DOCUMENT_RECEIPT))
    return FileRef(channel, EventKind.PHOTO, stored)


async def _change_options(ctx: Context) -> list[Option]:
    """The options "change the months" (when one count was asked) and "change the workers" (when
    there is a choice)."""
    t = ctx.t
    options = []
    if not ctx.state.data.get("per_plan"):
        options.append(ctx.option("months", t("pay.change_months")))
    if len(await _payable(ctx)) > 1:
        options.append(ctx.option("workers", t("pay.change_workers")))
    return options


class ConfirmStep(Step):
    name = "confirm"
    help_key = "pay.help.confirm"
    free_text = False

    async def ask(self, ctx: Context) -> list[Reply]:
        data, t = ctx.state.data, ctx.t
        lines = _lines(ctx)
        names = await _names(ctx, [line.sponsorship_id for line in lines])
        receipt = t("pay.receipt_yes") if data.get("receipt") else t("pay.receipt_no")
        if len(lines) == 1:
            (line,) = lines
            text = t(
                "pay.summary",
                name=names.get(line.sponsorship_id, ""),
                **_month_range(ctx, line.first_month, line.months),
                amount=t.money(int(str(data["amount"]))),
                receipt=receipt,
            )
        else:
            text = t(
                "pay.summary_lot",
                lines="\n".join(
                    t(
                        "pay.summary_line",
                        name=names.get(line.sponsorship_id, ""),
                        **_month_range(ctx, line.first_month, line.months),
                        amount=t.money(line.amount),
                    )
                    for line in lines
                ),
                total=t.money(int(str(data["amount"]))),
                receipt=receipt,
            )
            if data.get("per_plan"):
                text += "\n\n" + t("pay.per_plan")
        options = (ctx.option("confirm", t("pay.confirm")), *await _change_options(ctx))
        return [Reply(text, options=options)]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        if answer.choice == "months":
            return Goto(MonthsStep.name)
        if answer.choice == "workers":
            return Goto(WorkerStep.name)
        data = ctx.state.data
        lines = _lines(ctx)
        await payments.lock_sponsorships(
            ctx.repo.connection, [line.sponsorship_id for line in lines]
        )
        # Checked again: another device or process may have recorded (or the PIC
        # confirmed) some of these months, or the sponsorship ended, since they were chosen.
        payees = {payee.sponsorship.id: payee for payee in await _payees(ctx, _chosen(ctx))}
        problems = []
        for line in lines:
            problem = _problem(
                ctx,
                payees.get(line.sponsorship_id),
                line.sponsorship_id,
                line.first_month,
                line.months,
            )
            if problem is not None:
                problems.append(problem)
        if problems:
            data["problems"] = problems
            return Goto(FixStep.name)
        await payments.record_lot(
            ctx.repo.connection,
            lines,
            receipt_file_ref=data.get("receipt"),
            account_id=ctx.account.id,
            now=ctx.now,
        )
        for line in lines:
            await ctx.notices.payment_recorded(
                ctx.repo.connection,
                line.sponsorship_id,
                payments.months_of(line.first_month, line.months),
            )
        if len(lines) == 1:
            return Done([Reply(ctx.t("pay.done"))])
        return Done([Reply(ctx.t("pay.done_lot", count=len(lines)))])


class FixStep(Step):
    """Some chosen workers cannot be paid as chosen: say who and why, and how to go on."""

    name = "fix"
    help_key = "pay.help.fix"
    free_text = False

    def applies(self, ctx: Context) -> bool:
        return False  # reached only by Goto

    def _problems(self, ctx: Context) -> list[tuple[int, str, str]]:
        return [
            (int(sid), str(code), str(month))
            for sid, code, month in ctx.state.data.get("problems", [])
        ]

    async def ask(self, ctx: Context) -> list[Reply]:
        t = ctx.t
        problems = self._problems(ctx)
        names = await _names(ctx, [sid for sid, _, _ in problems])
        text = t(
            "pay.fix",
            problems="\n".join(
                t(
                    "pay.worker_problem",
                    name=names.get(sid, ""),
                    problem=_problem_text(ctx, code, month),
                )
                for sid, code, month in problems
            ),
        )
        options: list[Option] = []
        if {sid for sid, _, _ in problems} < set(_chosen(ctx)):
            dropped = ", ".join(dict.fromkeys(names.get(sid, "") for sid, _, _ in problems))
            options.append(ctx.option("drop", t("pay.drop", names=dropped)))
        options += await _change_options(ctx)
        return [Reply(text, options=tuple(options))]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        data = ctx.state.data
        if answer.choice == "months":
            data.pop("problems", None)
            return Goto(MonthsStep.name)
        if answer.choice == "workers":
            data.pop("problems", None)
            return Goto(WorkerStep.name)
        dropped = {sid for sid, _, _ in self._problems(ctx)}
        remaining = [sid for sid in _chosen(ctx) if sid not in dropped]
        if data.get("per_plan") or "count" not in data:
            return await _choose(ctx, remaining)
        data["sids"] = remaining
        return await _settle(ctx, int(str(data["count"])))


class PaymentFlow(Flow):
    name = "payment"
    title_key = "flow.title.payment"
    steps = (
        WorkerStep(),
        MonthsStep(),
        AmountStep(),
        ReceiptStep(),
        ConfirmStep(),
        FixStep(),
    )

    async def leave(self, ctx: Context) -> Reply:
        # Imported here: handlers.menus imports this module (the dues and consent it shows).
        from handlers import menus

        return await menus.main_menu(ctx)

    async def can_start(self, ctx: Context) -> str | None:
        asn = await ctx.asn()
        if asn is None:
            return ctx.t("workers.not_registered")
        if await _payable(ctx):
            return None
        lapsed = (
            await ctx.repo.session.execute(
                select(Sponsorship.worker_id, Worker.full_name)
                .join(Worker, Worker.id == Sponsorship.worker_id)
                .where(
                    Sponsorship.asn_id == asn.id,
                    Sponsorship.status == SponsorshipStatus.LAPSED,
                    # An erased worker is nobody the ASN can act for any more.
                    Worker.erased_at.is_(None),
                )
            )
        ).all()
        if not lapsed:
            return ctx.t("pay.nothing_to_pay")
        # A lapsed worker enrolled anew: that enrollment is on its way, not missing.
        rows = await ctx.repo.session.execute(
            select(Sponsorship.worker_id, Sponsorship.status).where(
                Sponsorship.asn_id == asn.id,
                Sponsorship.worker_id.in_([worker_id for worker_id, _ in lapsed]),
                Sponsorship.status.not_in((SponsorshipStatus.LAPSED, SponsorshipStatus.ENDED)),
            )
        )
        again = {worker_id: status for worker_id, status in rows}
        texts = dict.fromkeys(
            ctx.t(
                "pay.lapsed_waiting",
                name=name,
                status=ctx.t(f"status.{again[worker_id].value}"),
            )
            if worker_id in again
            else ctx.t("pay.problem.lapsed")
            for worker_id, name in lapsed
        )
        return "\n\n".join(texts)

    async def initial_data(self, ctx: Context) -> dict[str, object]:
        # One worker to pay for: the worker question is skipped.
        payable = await _payable(ctx)
        if len(payable) == 1:
            return {"sids": [payable[0].sponsorship.id], "per_plan": False}
        return {}


def _next_step(ctx: Context) -> str:
    """The first of the steps after the choice of workers that is still unanswered."""
    for step in PaymentFlow.steps[1:]:
        if isinstance(step, ConfirmStep) or step.applies(ctx):
            return step.name
    raise AssertionError("the confirmation is always a step of the flow")
