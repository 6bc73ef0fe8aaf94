"""PRODUCT 4.6: every worker can consent, whatever they have.

Three ways, one record (`storage.worker_side.record_consent`):

- WhatsApp: the request goes out on enrollment (handlers/notices.py) and the
  worker answers "YA" / "TIDAK" (handlers/flows/worker.py);
- a Telegram link t.me/<bot>?start=<token> the ASN forwards: opening it starts
  `LinkConsentFlow`, which asks the same question (storage/consent_links.py);
- a printed form (PDF, handlers/consent_form.py) the worker signs: the PIC
  records its scan from the enrollment's detail (`FormScanStep` in the queue).

By default (PROGRAM_ACCEPT_WITHOUT_CONSENT=false) the PIC cannot accept an
enrollment without the worker's consent, and the queue says why it waits.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import joinedload

from domain.local_time import local_date
from domain.vocabulary import Channel, ConsentMethod, WorkerConsent
from handlers import actions
from handlers.context import Context
from handlers.flow import Answer, Done, Flow, Goto, Invalid, Outcome, Step
from handlers.flows.payment import receipt_file, stored_receipt
from handlers.flows.worker import consent_recorded_text
from handlers.types import Document, EventKind, FileRef, Option, Reply
from storage import consent_links, worker_side
from storage.audit import Actor
from storage.consent_form import ConsentForm, consent_form_pdf
from storage.models import Asn, ConsentRecord, Sponsorship
from storage.worker_side import ConsentOutcome


class ConsentFacts(Protocol):
    """What an enrollment says about its worker's consent (a Sponsorship or an Enrollment)."""

    @property
    def worker_consent(self) -> WorkerConsent: ...

    @property
    def consent_requested_via(self) -> ConsentMethod | None: ...

    @property
    def consent_requested_at(self) -> datetime | None: ...

    @property
    def consent_method(self) -> ConsentMethod | None: ...


def consent_state(ctx: Context, item: ConsentFacts) -> str:
    """The consent as a person reads it: "given over WhatsApp", "asked over WhatsApp on
    2 December 2026, no answer yet", "not asked yet"."""
    t = ctx.t
    consent = item.worker_consent
    if consent is WorkerConsent.GIVEN and item.consent_method is not None:
        return t(f"consent.given_via.{item.consent_method.value}")
    if consent is WorkerConsent.PENDING and item.consent_requested_via is not None:
        asked = item.consent_requested_at
        return t(
            f"consent.pending_via.{item.consent_requested_via.value}",
            date=t.date(local_date(asked, ctx.config.timezone)) if asked else "-",
        )
    return t(f"consent.{consent.value}")


def may_accept(ctx: Context, item: ConsentFacts) -> bool:
    """Whether the PIC may accept now: the worker consented, or the setting allows without."""
    return ctx.config.accept_without_consent or item.worker_consent is WorkerConsent.GIVEN


def waiting_reason(ctx: Context, item: ConsentFacts) -> str | None:
    """Why the PIC cannot accept yet, and what can be done; None when they can."""
    if may_accept(ctx, item):
        return None
    if item.worker_consent is WorkerConsent.REFUSED:
        return ctx.t("pic.queue.consent_refused")
    return ctx.t("pic.queue.waits_for_consent", state=consent_state(ctx, item))


# -- the ASN: ways to ask the worker ---------------------------------------------------


def link_shown(ctx: Context, payload: str) -> str:
    """The link as the ASN forwards it; without a known bot username (the console),
    the command the worker types: "/start <payload>"."""
    username = ctx.config.telegram_bot_username
    if username:
        return f"https://t.me/{username}?start={payload}"
    return f"/start {payload}"


async def _asn_sponsorship(ctx: Context, sponsorship_id: int) -> Sponsorship | None:
    """One of this ASN's open enrollments whose worker has not answered yet."""
    asn = await ctx.asn()
    if asn is None:
        return None
    sponsorship = (
        await ctx.repo.session.execute(
            select(Sponsorship)
            .options(joinedload(Sponsorship.worker))
            .where(Sponsorship.id == sponsorship_id, Sponsorship.asn_id == asn.id)
        )
    ).scalar_one_or_none()
    if sponsorship is None or not sponsorship.status.is_open:
        return None
    return sponsorship


def ways_options(ctx: Context, sponsorship_id: int, *, link: bool = True) -> tuple[Option, ...]:
    """The ASN's ways to ask a worker without WhatsApp: a Telegram link, a printed form."""
    t = ctx.t
    options = [actions.ConsentForm(sponsorship_id).option(t("consent.ways.form"))]
    if link:
        options.insert(0, actions.ConsentLink(sponsorship_id).option(t("consent.ways.link")))
    return tuple(options)


async def link_reply(
    ctx: Context,
    sponsorship_id: int,
    worker_name: str,
    *,
    with_back: bool = True,
    requested_already: bool = False,
) -> Reply:
    """A new link for the worker, with its expiry, and the printed form as the other way
    (`with_back`: and the ways back, when no menu follows; `requested_already`: the
    enrollment was written as asked by link, see `consent_links.create_link`)."""
    t = ctx.t
    link = await consent_links.create_link(
        ctx.repo.connection,
        sponsorship_id=sponsorship_id,
        account_id=ctx.account.id,
        now=ctx.now,
        ttl=ctx.config.consent_link_ttl,
        requested_already=requested_already,
    )
    text = t(
        "consent.link.for_asn",
        name=worker_name,
        link=link_shown(ctx, link.payload),
        until=t.date(local_date(link.expires_at, ctx.config.timezone)),
    )
    ways = ways_options(ctx, sponsorship_id, link=False)
    return Reply(text, options=(*ways, *_back(ctx)) if with_back else ways)


async def asn_link(ctx: Context, sponsorship_id: int) -> list[Reply]:
    """The ASN asked for a consent link for one of their workers (`actions.ConsentLink`)."""
    t = ctx.t
    sponsorship = await _asn_sponsorship(ctx, sponsorship_id)
    if sponsorship is None:
        return not_yours(ctx)
    if sponsorship.worker_consent in (WorkerConsent.GIVEN, WorkerConsent.REFUSED):
        text = t("consent.already_answered", name=sponsorship.worker.full_name)
        return [Reply(text + " " + consent_state(ctx, sponsorship), options=_back(ctx))]
    return [await link_reply(ctx, sponsorship.id, sponsorship.worker.full_name)]


def _back(ctx: Context) -> tuple[Option, ...]:
    t = ctx.t
    return (
        actions.Workers().option(t("menu.workers")),
        actions.Menu().option(t("menu.back_to_menu")),
    )


# -- the worker: answering through the link --------------------------------------------


async def find_link(ctx: Context, payload: str) -> int | Reply:
    """The link a worker opened (its id, for `LinkConsentFlow`), or why it cannot be answered."""
    found = await consent_links.open_link(
        ctx.repo.session, payload=payload, account_id=ctx.account.id, now=ctx.now
    )
    if isinstance(found, consent_links.LinkProblem):
        return Reply(ctx.t(f"consent.link.{found.value}"))
    return found.link_id


class LinkAnswerStep(Step):
    """The consent question to a worker who opened the link: "YA" / "TIDAK"."""

    name = "answer"
    help_key = "consent.link.help"
    free_text = False

    async def ask(self, ctx: Context) -> list[Reply]:
        t = ctx.t
        found = await consent_links.open_link(
            ctx.repo.session,
            link_id=int(ctx.state.data.get("link", -1)),
            account_id=ctx.account.id,
            now=ctx.now,
        )
        if isinstance(found, consent_links.LinkProblem):
            # Expired or answered meanwhile: say so, with the way out.
            menu = actions.Menu().option(t("menu.back_to_menu"))
            return [Reply(t(f"consent.link.{found.value}"), options=(menu,))]
        text = t(
            "consent.link.question",
            worker=found.sponsorship.worker.full_name,
            asn=found.asn_name,
            program=t("program.name"),
        )
        return [
            Reply(
                text,
                options=(
                    ctx.option("yes", t("consent.link.yes")),
                    ctx.option("no", t("consent.link.no")),
                ),
            )
        ]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        found = await consent_links.open_link(
            ctx.repo.session,
            link_id=int(ctx.state.data.get("link", -1)),
            account_id=ctx.account.id,
            now=ctx.now,
        )
        if isinstance(found, consent_links.LinkProblem):
            # Answered another way, expired or ended meanwhile: nothing is recorded.
            return Done([Reply(ctx.t(f"consent.link.{found.value}"))])
        granted = answer.choice == "yes"
        result = await worker_side.record_consent(
            ctx.repo.session,
            found.sponsorship,
            granted=granted,
            method=ConsentMethod.TELEGRAM_LINK,
            channel=ctx.event.channel,
            channel_account_id=ctx.account.id,
            actor=Actor.account("worker", ctx.account.id),
            now=ctx.now,
        )
        if result.outcome not in (ConsentOutcome.GIVEN, ConsentOutcome.REFUSED):
            return Done([Reply(ctx.t("consent.link.answered"))])
        await consent_links.mark_used(ctx.repo.connection, found.link_id, ctx.now)
        await ctx.notices.consent_answered(
            ctx.repo.connection, found.sponsorship.id, granted=granted, now=ctx.now
        )
        return Done([Reply(consent_recorded_text(ctx, result, on_whatsapp=False))])


class LinkConsentFlow(Flow):
    """A worker's answer through a Telegram consent link (`t.me/<bot>?start=c_<token>`)."""

    name = "link_consent"
    title_key = "flow.title.link_consent"
    steps = (LinkAnswerStep(),)

    async def leave(self, ctx: Context) -> Reply:
        # Imported here: handlers.menus imports this module (the dues and consent it shows).
        from handlers import menus

        return await menus.main_menu(ctx)


# -- the printed form --------------------------------------------------------------------

PDF_MIME = "application/pdf"


def not_yours(ctx: Context) -> list[Reply]:
    """A consent button naming no open enrollment of this ASN, with the ways on."""
    return [Reply(ctx.t("consent.link.not_yours"), options=_back(ctx))]


async def asn_form(ctx: Context, sponsorship_id: int) -> list[Reply]:
    """The ASN asked for the printable consent form of one of their workers
    (`actions.ConsentForm`).

    The form is in the ASN's language (Indonesian by default), names the worker
    with a masked NIK, the sponsor, the programme and the dues, and carries the
    enrollment's number; the worker signs it and the PIC records its scan.
    """
    t = ctx.t
    sponsorship = await _asn_sponsorship(ctx, sponsorship_id)
    if sponsorship is None:
        return not_yours(ctx)
    worker = sponsorship.worker
    if sponsorship.worker_consent in (WorkerConsent.GIVEN, WorkerConsent.REFUSED):
        text = t("consent.already_answered", name=worker.full_name)
        return [Reply(text + " " + consent_state(ctx, sponsorship), options=_back(ctx))]
    asn = await ctx.repo.session.get(Asn, sponsorship.asn_id)
    profile = await ctx.asn()
    assert asn is not None and profile is not None
    amount = ctx.config.tariff.dues_for_months(
        sponsorship.first_month, 1, funding=sponsorship.funding_source
    )
    form = ConsentForm(
        title=t("consent.form.title"),
        reference=t("consent.form.reference", number=sponsorship.id),
        facts=(
            (t("consent.form.worker"), worker.full_name),
            (t("consent.form.nik"), worker.nik_masked),
            (t("consent.form.birth_date"), t.date(worker.birth_date)),
            (t("consent.form.address"), f"{worker.village}, {worker.district}"),
            (t("consent.form.sponsor"), f"{asn.full_name} (NIP {asn.nip})"),
            (t("consent.form.opd"), profile.opd_name),
            (t("consent.form.program"), t("consent.form.program_value")),
            (
                t("consent.form.dues"),
                t("consent.form.dues_value", amount=t.money(amount), asn=asn.full_name),
            ),
            (t("consent.form.first_month"), t.month(sponsorship.first_month)),
        ),
        consent_text=t(
            "consent.link.question",
            worker=worker.full_name,
            asn=asn.full_name,
            program=t("program.name"),
        ),
        choices=(t("consent.form.yes"), t("consent.form.no")),
        signatures=(
            (t("consent.form.sign_worker"), worker.full_name),
            (t("consent.form.sign_sponsor"), asn.full_name),
        ),
        place_date=t("consent.form.place_date"),
        footer=t(
            "consent.form.footer", opd=profile.opd_name, version=worker_side.WORKER_CONSENT_VERSION
        ),
    )
    content = await asyncio.to_thread(consent_form_pdf, form, created_at=ctx.now)
    await consent_links.mark_requested(
        ctx.repo.connection, sponsorship_id=sponsorship.id, via=ConsentMethod.FORM, now=ctx.now
    )
    return [
        Reply(
            t("consent.form.for_asn", name=worker.full_name, opd=profile.opd_name),
            document=Document(f"persetujuan-{sponsorship.id}.pdf", content, PDF_MIME),
            options=(
                actions.ConsentLink(sponsorship.id).option(t("consent.ways.link")),
                *_back(ctx),
            ),
        )
    ]


class FormScanStep(Step):
    """The PIC records a signed consent form by its photo or scan (from the queue's review).

    The scan is kept by the channel's file reference, as a payment receipt is;
    the consent is recorded with method "form", the PIC as its author in the
    audit log, and the ASN is told.
    """

    name = "consent_form"
    help_key = "pic.consent_form.help"
    accepts_files = True
    #: The queue's review step (handlers/flows/pic.py), where the PIC goes back to.
    review_step = "review"

    def applies(self, ctx: Context) -> bool:
        return False  # reached from the review step only

    async def ask(self, ctx: Context) -> list[Reply]:
        t = ctx.t
        name = await self._worker_name(ctx)
        return [
            Reply(
                t("pic.consent_form.ask", name=name or "-"),
                options=(ctx.option("back", t("pic.consent_form.back")),),
            )
        ]

    async def _worker_name(self, ctx: Context) -> str | None:
        sponsorship = await self._sponsorship(ctx)
        return sponsorship.worker.full_name if sponsorship is not None else None

    async def _sponsorship(self, ctx: Context) -> Sponsorship | None:
        role = await ctx.pic()
        if role is None:
            return None
        return (
            await ctx.repo.session.execute(
                select(Sponsorship)
                .options(joinedload(Sponsorship.worker))
                .where(
                    Sponsorship.id == int(ctx.state.data.get("sid", -1)),
                    Sponsorship.opd_id == role.opd_id,
                )
            )
        ).scalar_one_or_none()

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        t = ctx.t
        if answer.choice == "back":
            return Goto(self.review_step)
        if answer.kind not in (EventKind.PHOTO, EventKind.DOCUMENT) or not answer.file_ref:
            return Invalid(t("pic.consent_form.need_file"))
        role = await ctx.pic()
        sponsorship = await self._sponsorship(ctx)
        if role is None or sponsorship is None:
            return Goto(self.review_step, notice=t("pic.queue.already_handled"))
        result = await worker_side.record_consent(
            ctx.repo.session,
            sponsorship,
            granted=True,
            method=ConsentMethod.FORM,
            channel=ctx.event.channel,
            channel_account_id=ctx.account.id,
            actor=Actor.pic(role.pic_id),
            now=ctx.now,
            evidence_file_ref=stored_receipt(answer.kind, answer.file_ref),
        )
        if result.outcome is not ConsentOutcome.GIVEN:
            notice = t("pic.consent_form.not_recorded", state=consent_state(ctx, sponsorship))
            return Goto(self.review_step, notice=notice)
        await ctx.notices.consent_answered(
            ctx.repo.connection, sponsorship.id, granted=True, now=ctx.now
        )
        name = sponsorship.worker.full_name
        return Goto(self.review_step, notice=t("pic.consent_form.recorded", name=name))


async def form_scan(ctx: Context, sponsorship_id: int) -> FileRef | None:
    """The signed form's scan the PIC recorded, to show again with the enrollment, when
    the person's channel issued its reference (elsewhere the text says how consent came)."""
    row = (
        await ctx.repo.connection.execute(
            select(ConsentRecord.evidence_file_ref, ConsentRecord.channel)
            .where(
                ConsentRecord.sponsorship_id == sponsorship_id,
                ConsentRecord.method == ConsentMethod.FORM,
                ConsentRecord.evidence_file_ref.is_not(None),
            )
            .order_by(ConsentRecord.id.desc())
            .limit(1)
        )
    ).first()
    if row is None or Channel(row.channel) is not ctx.event.channel:
        return None
    return receipt_file(row.evidence_file_ref, ctx.event.channel)
