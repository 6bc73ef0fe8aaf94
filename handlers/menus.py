"""Menus and read-only views: main menu, info pages, language, help, my workers."""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import bindparam, exists, select

from domain.dues import due_date
from domain.months import add_months
from domain.tariff import LOWEST_INCOME_BRACKET
from domain.vocabulary import Language, PaymentPlan, SponsorshipStatus, WorkerConsent
from handlers import actions
from handlers.context import Context
from handlers.flows.common import work_label
from handlers.flows.consent import consent_state
from handlers.flows.payment import dues_of, has_dues_to_pay, plan_of
from handlers.types import Option, Reply
from handlers.where_to_pay import where_to_pay
from storage import payments, roles
from storage.models import Administrator, Sponsorship, Worker
from storage.sponsorship_end import stop_reason

INFO_TOPICS: tuple[actions.InfoTopic, ...] = ("dues", "where", "benefits", "how")
#: A worker who has not answered the consent request can be asked another way.
_UNANSWERED = (WorkerConsent.NOT_REQUESTED, WorkerConsent.PENDING)


async def main_menu(ctx: Context) -> Reply:
    """The main menu: the same entries at the same positions whatever happens meanwhile.

    A person types a number they remember ("2" for my workers), so an entry that
    comes and goes must never move the others. The fixed
    entries come first (register, or enroll and my workers; then info, help,
    language; then "Tanya PIC" for a registered ASN); the ones that come and go
    follow in a fixed order: pay dues (when the ASN has something to pay), the
    PIC menu (for a PIC), the administrator's menu, continue the draft
    (when one is kept), the most changeable last.
    """
    t = ctx.t
    asn = await ctx.asn()
    options: list[Option] = []
    if asn is None:
        options.append(actions.Register().option(t("menu.register")))
    else:
        options.append(actions.Enroll().option(t("menu.enroll")))
        options.append(actions.Workers().option(t("menu.workers")))
    options.append(actions.Info().option(t("menu.info")))
    options.append(actions.HelpMenu().option(t("menu.help")))
    options.append(actions.ChooseLanguage().option(t("menu.language")))
    if asn is not None:
        # Asking a person is there for every ASN, so it sits with the fixed entries.
        options.append(actions.Ask().option(t("menu.ask")))
    facts = await _menu_facts(ctx, asn.id if asn is not None else None)
    if facts.dues_bearing and await has_dues_to_pay(ctx):
        options.append(actions.Pay().option(t("menu.pay")))
    # Without an appointment to find, `ctx.pic()` would return None: its query is skipped.
    role = await ctx.pic() if facts.pic_possible or ctx.pic_loaded else None
    if role is not None:
        options.append(actions.PicHome().option(t("menu.pic", opd=role.opd_name)))
    if facts.administrator:
        options.append(actions.AdminHome().option(t("menu.admin")))
    draft = ctx.state.draft
    if draft:
        title = t(f"flow.title.{draft.get('flow')}")
        options.append(actions.Resume().option(t("menu.resume", title=title)))
    return Reply(t("menu.title"), options=tuple(options))


#: (the ASN has a dues-bearing sponsorship, the account is a current administrator,
#: a PIC appointment may be found for the account: `roles.PIC_POSSIBLE`); built once
#: (building it per call cost more than running it). A NULL asn_id: no ASN.
_MENU_FACTS = select(
    exists()
    .where(
        Sponsorship.asn_id == bindparam("asn_id"),
        Sponsorship.status.in_(payments.DUES_BEARING),
        Worker.id == Sponsorship.worker_id,
    )
    .label("dues_bearing"),
    exists()
    .where(
        Administrator.channel_account_id == bindparam("account_id"),
        Administrator.removed_at.is_(None),
    )
    .label("administrator"),
    roles.PIC_POSSIBLE.label("pic_possible"),
)


class _MenuFacts(NamedTuple):
    dues_bearing: bool
    administrator: bool
    pic_possible: bool


async def _menu_facts(ctx: Context, asn_id: int | None) -> _MenuFacts:
    """One statement: the ASN has a dues-bearing sponsorship, the account is a current
    administrator, a PIC appointment may be found for it.

    The first is what `has_dues_to_pay` reads first (its sponsorships with their
    workers): without one there is nothing to pay, and its entity load and
    month queries are skipped. Most menus are shown to an ASN whose workers are
    still waiting for the PIC, or to someone who is not an ASN; and most people
    are no PIC, so `pic_for_account`'s query is skipped too. It sees what that
    query sees: the event's transaction as flushed so far (the session does not
    autoflush; `ctx.pic()` flushes it first, but appointments are written in Core).
    """
    if asn_id is None and ctx.account_created:
        # A new account: no ASN, and nobody's administrator; its PIC look-up is the
        # context's (none on Telegram; on WhatsApp an appointment may wait for its phone).
        return _MenuFacts(dues_bearing=False, administrator=False, pic_possible=True)
    row = (
        await ctx.repo.connection.execute(
            _MENU_FACTS, {"asn_id": asn_id, "account_id": ctx.account.id}
        )
    ).one()
    return _MenuFacts(bool(row.dues_bearing), bool(row.administrator), bool(row.pic_possible))


def resume_offer(ctx: Context, title: str) -> Reply:
    """After a long pause: offer to continue the parked flow."""
    return Reply(
        ctx.t("draft.idle_offer", title=title),
        options=(
            actions.Resume().option(ctx.t("draft.continue")),
            actions.Menu().option(ctx.t("draft.to_menu")),
        ),
    )


def draft_kept(ctx: Context, title: str) -> Reply:
    """After "batal" with answers given: nothing was sent, the answers are a draft;
    continue it, throw it away, or go to the menu."""
    return Reply(
        ctx.t("flow.cancelled_kept", title=title),
        options=(
            actions.Resume().option(ctx.t("draft.continue")),
            actions.Discard().option(ctx.t("draft.discard")),
            actions.Menu().option(ctx.t("draft.to_menu")),
        ),
    )


def draft_choice(ctx: Context, title: str, flow: str) -> Reply:
    """Starting a flow that has a draft: continue it or start again."""
    return Reply(
        ctx.t("draft.exists", title=title),
        options=(
            actions.Resume().option(ctx.t("draft.continue")),
            actions.Fresh(flow).option(ctx.t("draft.start_fresh")),
        ),
    )


def language_menu(ctx: Context) -> Reply:
    return Reply(
        ctx.t("language.choose"),
        options=(
            actions.ChooseLanguage(Language.INDONESIAN).option("Bahasa Indonesia"),
            actions.ChooseLanguage(Language.ENGLISH).option("English"),
        ),
    )


def info(ctx: Context, topic: actions.InfoTopic | None) -> Reply:
    """The info menu, or one of its pages (texts live in the catalogue)."""
    t = ctx.t
    topic_options = (
        *(actions.Info(name).option(t(f"info.menu.{name}")) for name in INFO_TOPICS),
        actions.Menu().option(t("menu.back_to_menu")),
    )
    if topic not in INFO_TOPICS:
        return Reply(t("info.title"), options=topic_options)
    if topic == "dues":
        month = add_months(ctx.today.replace(day=1), 1)
        dues = ctx.config.tariff.monthly_dues(month)
        text = t(
            "info.dues",
            income=t.money(LOWEST_INCOME_BRACKET),
            jkk=t.money(dues.jkk),
            jkm=t.money(dues.jkm),
            monthly=t.money(dues.total),
            quarterly=t.money(ctx.config.tariff.plan_amount(PaymentPlan.QUARTERLY, month)),
        )
    elif topic == "where":
        text = where_to_pay(t, ctx.config.payment_channels)
    else:
        text = t(f"info.{topic}")
    return Reply(text, options=topic_options)


async def my_workers(ctx: Context) -> list[Reply]:
    """PRODUCT 4.3: the ASN's workers with status, paid-until, next due date and amount.

    Dues figures come from the confirmed payments (`domain.dues`), never typed in.
    """
    t = ctx.t
    asn = await ctx.asn()
    if asn is None:
        return [Reply(t("workers.not_registered")), await main_menu(ctx)]
    sponsorships = await ctx.repo.sponsorships.list_for_asn(asn.id)
    if not sponsorships:
        return [Reply(t("workers.none")), await main_menu(ctx)]
    paid = await payments.paid_months(ctx.repo.connection, [s.id for s in sponsorships])
    lines = [t("workers.title", count=len(sponsorships))]
    ways: list[Option] = []
    consent_actions: list[Option] = []
    payable = False
    for index, sponsorship in enumerate(sponsorships, start=1):
        worker = sponsorship.worker
        # The plan of the next payment: a plan change shows once it applies, with its month.
        plan = plan_of(sponsorship, paid[sponsorship.id])
        plan_from = sponsorship.first_month
        if plan is not sponsorship.plan and sponsorship.next_plan_from is not None:
            plan_from = sponsorship.next_plan_from
        lines.append(
            t(
                "workers.line",
                index=index,
                name=worker.full_name,
                nik=worker.nik_masked,
                occupation=work_label(t, sponsorship.occupation, sponsorship.occupation_text),
                status=t(f"status.{sponsorship.status.value}"),
                consent=consent_state(ctx, sponsorship),
                plan=t(f"plan.{plan.value}"),
                first_month=t.month(plan_from),
            )
        )
        if sponsorship.kpj:
            lines[-1] += "\n" + t("workers.kpj", kpj=sponsorship.kpj)
        if sponsorship.status in payments.DUES_BEARING:
            status = dues_of(ctx, sponsorship, paid[sponsorship.id])
            lines[-1] += "\n" + t(
                "workers.dues",
                paid_until=t.month(status.paid_until)
                if status.paid_until
                else t("workers.nothing_paid"),
                due=t.date(status.next_due_date),
                amount=t.money(status.next_amount),
                tenure=status.tenure_months,
            )
            if status.months_in_arrears:
                lines[-1] += "\n" + t("workers.arrears", arrears=status.months_in_arrears)
            payable = payable or plan is not PaymentPlan.PAYROLL_DEDUCTION
        elif sponsorship.status.is_open:
            first = sponsorship.first_month
            lines[-1] += "\n" + t(
                "workers.first_due",
                due=t.date(due_date(first, ctx.config.calendar)),
                amount=t.money(
                    ctx.config.tariff.dues_for_months(
                        first,
                        sponsorship.plan.months_per_payment,
                        funding=sponsorship.funding_source,
                    )
                ),
            )
        stopped = stop_reason(sponsorship.end_reason)
        if sponsorship.status is SponsorshipStatus.ENDED and stopped is not None:
            lines[-1] += "\n" + (
                t("workers.stopped", month=t.month(sponsorship.ended_month))
                if sponsorship.ended_month
                else t("workers.stopped_unpaid")
            )
        if sponsorship.status.is_open and sponsorship.worker_consent in _UNANSWERED:
            # The worker has not answered: a Telegram link or a printed form (PRODUCT 4.6).
            consent_actions.append(
                actions.ConsentLink(sponsorship.id).option(
                    t("consent.ways.ask", name=worker.full_name)
                )
            )
        if sponsorship.status is SponsorshipStatus.RETURNED:
            lines[-1] += "\n" + t("workers.returned", reason=sponsorship.return_reason or "-")
            ways.append(actions.Fix(sponsorship.id).option(t("workers.fix", name=worker.full_name)))
    has_fixes = bool(ways)
    ways += consent_actions
    if any(s.status in payments.DUES_BEARING for s in sponsorships):
        ways.insert(0, actions.ChangePlan().option(t("workers.change_plan")))
    if payable:
        ways.insert(0, actions.Pay().option(t("workers.pay")))
    if any(s.status.is_open for s in sponsorships):
        ways.append(actions.StopSponsoring().option(t("workers.stop")))
    if ways:
        prompt = t("workers.fix_prompt") if has_fixes else t("workers.actions")
        return [
            Reply("\n\n".join(lines)),
            Reply(prompt, options=(*ways, actions.Menu().option(t("menu.back_to_menu")))),
        ]
    return [Reply("\n\n".join(lines)), await main_menu(ctx)]
