"""Menus and read-only views: main menu, info pages, language, help, my workers."""

from __future__ import annotations

from domain.dues import due_date
from domain.months import add_months
from domain.tariff import LOWEST_INCOME_BRACKET
from domain.vocabulary import Language, PaymentPlan, SponsorshipStatus
from handlers.context import Context
from handlers.flows.common import work_label
from handlers.flows.payment import dues_of, plan_of
from handlers.types import Option, Reply
from storage import payments

INFO_TOPICS = ("dues", "benefits", "how")


async def main_menu(ctx: Context) -> Reply:
    """The main menu, adapted to whether the person is a registered ASN and has a draft."""
    t = ctx.t
    options: list[Option] = []
    draft = ctx.state.draft
    if draft:
        title = t(f"flow.title.{draft.get('flow')}")
        options.append(ctx.global_option("resume", t("menu.resume", title=title)))
    if await ctx.asn() is None:
        options.append(ctx.global_option("register", t("menu.register")))
    else:
        options.append(ctx.global_option("enroll", t("menu.enroll")))
        options.append(ctx.global_option("workers", t("menu.workers")))
    role = await ctx.pic()
    if role is not None:
        options.append(ctx.global_option("pic", t("menu.pic", opd=role.opd_name)))
    options.append(ctx.global_option("info", t("menu.info")))
    options.append(ctx.global_option("helpmenu", t("menu.help")))
    options.append(ctx.global_option("language", t("menu.language")))
    return Reply(t("menu.title"), options=tuple(options))


def resume_offer(ctx: Context, title: str) -> Reply:
    """After a long pause: offer to continue the parked flow."""
    return Reply(
        ctx.t("draft.idle_offer", title=title),
        options=(
            ctx.global_option("resume", ctx.t("draft.continue")),
            ctx.global_option("menu", ctx.t("draft.to_menu")),
        ),
    )


def draft_choice(ctx: Context, title: str, flow: str) -> Reply:
    """Starting a flow that has a draft: continue it or start again."""
    return Reply(
        ctx.t("draft.exists", title=title),
        options=(
            ctx.global_option("resume", ctx.t("draft.continue")),
            ctx.global_option(f"fresh:{flow}", ctx.t("draft.start_fresh")),
        ),
    )


def language_menu(ctx: Context) -> Reply:
    return Reply(
        ctx.t("language.choose"),
        options=(
            ctx.global_option(f"language:{Language.INDONESIAN.value}", "Bahasa Indonesia"),
            ctx.global_option(f"language:{Language.ENGLISH.value}", "English"),
        ),
    )


def info(ctx: Context, topic: str | None) -> Reply:
    """The info menu, or one of its pages (texts live in the catalogue)."""
    t = ctx.t
    topic_options = (
        *(ctx.global_option(f"info:{name}", t(f"info.menu.{name}")) for name in INFO_TOPICS),
        ctx.global_option("menu", t("menu.back_to_menu")),
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
    else:
        text = t(f"info.{topic}")
    return Reply(text, options=topic_options)


async def my_workers(ctx: Context) -> list[Reply]:
    """SPEC 4.3: the ASN's workers with status, paid-until, next due date and amount.

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
    actions: list[Option] = []
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
                consent=t(f"consent.{sponsorship.worker_consent.value}"),
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
        if sponsorship.status is SponsorshipStatus.RETURNED:
            lines[-1] += "\n" + t("workers.returned", reason=sponsorship.return_reason or "-")
            actions.append(
                ctx.global_option(f"fix:{sponsorship.id}", t("workers.fix", name=worker.full_name))
            )
    has_fixes = bool(actions)
    if any(s.status in payments.DUES_BEARING for s in sponsorships):
        actions.insert(0, ctx.global_option("plan", t("workers.change_plan")))
    if payable:
        actions.insert(0, ctx.global_option("pay", t("workers.pay")))
    if actions:
        prompt = t("workers.fix_prompt") if has_fixes else t("workers.actions")
        return [
            Reply("\n\n".join(lines)),
            Reply(prompt, options=(*actions, ctx.global_option("menu", t("menu.back_to_menu")))),
        ]
    return [Reply("\n\n".join(lines)), await main_menu(ctx)]
