"""PRODUCT 4.6: the worker on WhatsApp — consent answer, own status, erasure; unknown numbers.

A worker is recognised by the number WhatsApp vouches for (`event.sender_phone`)
being the phone an ASN typed when enrolling them; they never register. What
they can do is small and mostly typed words, since the consent request arrives
as a template with "YA" / "TIDAK" buttons:

- "YA" / "TIDAK" (the template's buttons carry `consent:yes:<id>` /
  `consent:no:<id>`; typed words answer the newest pending request);
- "STATUS": their own record (masked NIK, status, paid until);
- "HAPUS": erasure, after a confirmation (`EraseFlow`). A number an ASN typed
  for several workers (a shared family phone) is asked which worker first, and
  only that one is erased; STATUS shows every worker of the number, each with
  their name and masked NIK, so the chooser's list is the one STATUS shows.

An unknown number (neither ASN, PIC nor worker) gets a short explanation and
the options: register as ASN, check status as a worker, help.
"""

from __future__ import annotations

from domain.vocabulary import Channel
from domain.vocabulary import SponsorshipStatus as S
from handlers import actions
from handlers.context import Context
from handlers.flow import Answer, Done, Flow, Invalid, Next, Outcome, Step
from handlers.flows.payment import dues_of
from handlers.types import Reply
from storage import payments, worker_side
from storage.audit import Actor
from storage.models import Asn
from storage.worker_side import ConsentAnswer, ConsentOutcome


def phone_of(ctx: Context) -> str | None:
    """The sender's own number as the channel vouches for it (WhatsApp), else None."""
    return ctx.event.sender_phone


async def is_worker(ctx: Context) -> bool:
    phone = phone_of(ctx)
    if phone is None:
        return False
    return bool(await worker_side.records_for_phone(ctx.repo.session, phone))


def worker_menu(ctx: Context) -> Reply:
    t = ctx.t
    return Reply(
        t("worker.menu"),
        options=(
            actions.WorkerStatus().option(t("worker.menu.status")),
            actions.Erase().option(t("worker.menu.erase")),
            actions.HelpMenu().option(t("menu.help")),
            actions.Ask().option(t("menu.ask")),
        ),
    )


def consent_question(ctx: Context, sponsorship_id: int, asn_name: str, worker_name: str) -> Reply:
    """The consent question again (typed words or these buttons answer it)."""
    t = ctx.t
    return Reply(
        t(
            "notice.consent_request",
            worker=worker_name,
            asn=asn_name,
            program=t("program.name"),
        ),
        options=(
            actions.Consent("yes", sponsorship_id).option(t("worker.consent.yes")),
            actions.Consent("no", sponsorship_id).option(t("worker.consent.no")),
        ),
    )


async def greeting(ctx: Context) -> list[Reply] | None:
    """What a WhatsApp sender who is no ASN or PIC sees on any idle input; None for others.

    A worker with a pending consent request is asked it again; another worker
    gets the worker menu; an unknown number the short explanation.
    """
    phone = phone_of(ctx)
    if phone is None or await ctx.asn() is not None or await ctx.pic() is not None:
        return None
    pending = await worker_side.pending_consent(ctx.repo.session, phone)
    if pending is not None:
        asn = await ctx.repo.session.get(Asn, pending.asn_id)
        asn_name = asn.full_name if asn is not None else "-"
        return [consent_question(ctx, pending.id, asn_name, pending.worker.full_name)]
    if await is_worker(ctx):
        return [Reply(ctx.t("worker.greeting")), worker_menu(ctx)]
    return [unknown_intro(ctx)]


def unknown_intro(ctx: Context) -> Reply:
    t = ctx.t
    return Reply(
        t("whatsapp.unknown_intro"),
        options=(
            actions.Register().option(t("menu.register")),
            actions.WorkerStatus().option(t("worker.menu.status_unknown")),
            actions.HelpMenu().option(t("menu.help")),
        ),
    )


async def answer_consent(ctx: Context, granted: bool, sponsorship_id: int | None) -> list[Reply]:
    """Record YA / TIDAK; the ASN is told; a refusal ends the enrollment."""
    phone = phone_of(ctx)
    if phone is None:
        return [Reply(ctx.t("worker.whatsapp_only"))]
    result = await worker_side.answer_consent(
        ctx.repo.session,
        phone_e164=phone,
        sponsorship_id=sponsorship_id,
        granted=granted,
        channel=ctx.event.channel,
        channel_account_id=ctx.account.id,
        now=ctx.now,
    )
    t = ctx.t
    if result.outcome is ConsentOutcome.NOT_FOUND:
        return await no_consent_request(ctx)
    if result.outcome is ConsentOutcome.ALREADY:
        return [Reply(t("worker.consent.already")), *await _menu_for(ctx)]
    assert result.sponsorship_id is not None
    await ctx.notices.consent_answered(
        ctx.repo.connection, result.sponsorship_id, granted=granted, now=ctx.now
    )
    return [Reply(consent_recorded_text(ctx, result, on_whatsapp=True)), worker_menu(ctx)]


async def no_consent_request(ctx: Context) -> list[Reply]:
    """A YA / TIDAK that answers no request (none pending, or a forged button)."""
    return [Reply(ctx.t("worker.consent.none")), *await _menu_for(ctx)]


#: Where the enrollment stood when the worker answered, for what they are told.
_ACCEPTED = (S.ACCEPTED, S.SUBMITTED, S.ACTIVE, S.CARD_HANDED_OVER)


def consent_recorded_text(ctx: Context, result: ConsentAnswer, *, on_whatsapp: bool) -> str:
    """What a worker is told after answering, by where the enrollment stood.

    A PIC may already have accepted it (PROGRAM_ACCEPT_WITHOUT_CONSENT) or returned
    it to the ASN for a correction: the worker hears what happens next, and a
    refusal of an accepted enrollment says the PIC will tell BPJS.
    """
    t = ctx.t
    name = result.worker_name or "-"
    if result.outcome is ConsentOutcome.REFUSED:
        key = (
            "worker.consent.refused_after_accept"
            if result.status in _ACCEPTED
            else "worker.consent.refused"
        )
        return t(key, name=name)
    if result.status in _ACCEPTED:
        return t("worker.consent.thanks_accepted", name=name)
    if result.status is S.RETURNED:
        return t("worker.consent.thanks_returned", name=name)
    return t("worker.consent.thanks" if on_whatsapp else "worker.consent.thanks_link", name=name)


async def status(ctx: Context) -> list[Reply]:
    """The worker's own record: masked NIK, status, paid until (PRODUCT 4.6 "STATUS")."""
    t = ctx.t
    phone = phone_of(ctx)
    if phone is None:
        return [Reply(t("worker.whatsapp_only"))]
    records = await worker_side.records_for_phone(ctx.repo.session, phone)
    if not records:
        return [Reply(t("worker.status.none")), unknown_intro(ctx)]
    paid = await payments.paid_months(ctx.repo.connection, [s.id for s in records])
    lines = [t("worker.status.title")]
    for sponsorship in records:
        line = t(
            "worker.status.line",
            name=sponsorship.worker.full_name,
            nik=sponsorship.worker.nik_masked,
            status=t(f"status.{sponsorship.status.value}"),
            consent=t(f"consent.{sponsorship.worker_consent.value}"),
        )
        if sponsorship.kpj:
            line += "\n" + t("workers.kpj", kpj=sponsorship.kpj)
        if sponsorship.status in payments.DUES_BEARING:
            dues = dues_of(ctx, sponsorship, paid[sponsorship.id])
            line += "\n" + t(
                "worker.status.paid_until",
                paid_until=t.month(dues.paid_until)
                if dues.paid_until
                else t("workers.nothing_paid"),
            )
        lines.append(line)
    return [Reply("\n\n".join(lines)), worker_menu(ctx)]


async def _menu_for(ctx: Context) -> list[Reply]:
    return [worker_menu(ctx)] if await is_worker(ctx) else [unknown_intro(ctx)]


class WhichWorkerStep(Step):
    """A number shared by several workers: whose data goes (one of them, never all)."""

    name = "which"
    help_key = "worker.erase.which_help"
    free_text = False

    def applies(self, ctx: Context) -> bool:
        return "wid" not in ctx.state.data

    async def ask(self, ctx: Context) -> list[Reply]:
        phone = phone_of(ctx) or ""
        workers = await worker_side.workers_for_phone(ctx.repo.session, phone)
        options = tuple(
            ctx.option(str(w.id), ctx.t("worker.erase.worker", name=w.full_name, nik=w.nik_masked))
            for w in workers
        )
        return [Reply(ctx.t("worker.erase.which"), options=options)]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        chosen = int(answer.choice) if answer.choice and answer.choice.isdigit() else 0
        workers = await worker_side.workers_for_phone(ctx.repo.session, phone_of(ctx) or "")
        if chosen not in {w.id for w in workers}:
            return Invalid(ctx.t("worker.erase.which_help"))
        ctx.state.data["wid"] = chosen
        return Next()


class ConfirmEraseStep(Step):
    name = "confirm"
    help_key = "worker.erase.help"
    free_text = False

    async def ask(self, ctx: Context) -> list[Reply]:
        t = ctx.t
        text = t("worker.erase.confirm")
        workers = await worker_side.workers_for_phone(ctx.repo.session, phone_of(ctx) or "")
        if len(workers) > 1:
            chosen = next((w for w in workers if w.id == ctx.state.data.get("wid")), None)
            if chosen is not None:
                named = t("worker.erase.worker", name=chosen.full_name, nik=chosen.nik_masked)
                text = t("worker.erase.confirm_for", worker=named) + "\n\n" + text
        return [
            Reply(
                text,
                options=(
                    ctx.option("yes", t("worker.erase.yes")),
                    ctx.option("no", t("worker.erase.no")),
                ),
            )
        ]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        if answer.choice != "yes":
            return Done([Reply(ctx.t("worker.erase.kept")), worker_menu(ctx)], show_menu=False)
        phone = phone_of(ctx)
        if phone is None:
            return Invalid(ctx.t("worker.whatsapp_only"))
        worker_id = ctx.state.data.get("wid")
        erasure = (
            await worker_side.erase_worker(
                ctx.repo.session,
                phone_e164=phone,
                worker_id=worker_id,
                actor=Actor.account("worker", ctx.account.id),
                now=ctx.now,
                inbound_message_id=ctx.event.update_id
                if ctx.event.channel is Channel.WHATSAPP
                else None,
            )
            if isinstance(worker_id, int)
            else None
        )
        if erasure is None:
            return Done(
                [Reply(ctx.t("worker.status.none")), *await _menu_for(ctx)], show_menu=False
            )
        await ctx.notices.worker_erased(ctx.repo.connection, erasure, now=ctx.now)
        return Done([Reply(ctx.t("worker.erase.done")), *await _menu_for(ctx)], show_menu=False)


class EraseFlow(Flow):
    """ "HAPUS": which worker (a shared number), one confirmation, then that worker's
    enrollments end and their data is anonymised; other workers of the number keep theirs."""

    name = "erase"
    title_key = "flow.title.erase"
    steps = (WhichWorkerStep(), ConfirmEraseStep())

    async def leave(self, ctx: Context) -> Reply:
        # A worker's own menu; an ASN or PIC writing "hapus" from WhatsApp gets theirs.
        own = await greeting(ctx)
        if own is not None:
            return own[-1]
        # Imported here: handlers.menus imports this module through the consent views.
        from handlers import menus

        return await menus.main_menu(ctx)

    async def can_start(self, ctx: Context) -> str | None:
        if phone_of(ctx) is None:
            return ctx.t("worker.whatsapp_only")
        if not await is_worker(ctx):
            return ctx.t("worker.status.none")
        return None

    async def initial_data(self, ctx: Context) -> dict[str, object]:
        workers = await worker_side.workers_for_phone(ctx.repo.session, phone_of(ctx) or "")
        return {"wid": workers[0].id} if len(workers) == 1 else {}
