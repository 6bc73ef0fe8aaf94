"""PRODUCT 4.5: the PIC's work in the chat.

The PIC home shows the OPD's summary and the work: the verification queue
(`VerifyFlow`), the collective file export and its "sent to BPJS"
confirmation, the KPJ file import (send the file at any time; a preview comes
back and nothing changes until the PIC applies it), and cards handed over
(`HandoverFlow`).

The OPD always comes from the PIC's appointment (`ctx.pic()`); ids in buttons
are looked up within that OPD only, so a forged or stale id of another OPD
answers "not found".
"""

from __future__ import annotations

import asyncio
import io
import logging
from datetime import date, datetime, time

from domain.kpj import KpjProblem, parse_kpj
from domain.local_time import local_moment
from domain.months import add_months
from domain.phone import display_phone
from domain.tariff import FundingSource
from domain.vocabulary import BatchStatus, Channel, ConsentMethod, ReturnReason
from domain.vocabulary import SponsorshipStatus as S
from handlers import actions, menus
from handlers.context import Context
from handlers.flow import Answer, Done, Flow, Goto, Invalid, Outcome, Step
from handlers.flows.common import work_label
from handlers.flows.consent import FormScanStep, consent_state, form_scan, waiting_reason
from handlers.flows.payment import receipt_file
from handlers.parsing import TextProblem, parse_note, record_id
from handlers.types import Document, Option, Reply
from storage import audit, dues_queries, payments, tickets, workbench
from storage.audit import Actor
from storage.collective import collective_rows, preview_import
from storage.collective_file import KpjFileError, write_collective_xlsx
from storage.isolated_read import read_kpj_file_isolated
from storage.roles import PicRole
from storage.workbench import ChangeProblem, Enrollment

log = logging.getLogger(__name__)

XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
#: Rejected rows listed in the chat preview (the counts cover all of them).
PREVIEW_EXAMPLES = 10
#: Cards offered one by one per page of the hand-over list (with a batch, "next" and
#: "stop" still a WhatsApp list of at most 10 rows).
CARDS_SHOWN = 6
#: Names shown when the PIC confirms a whole batch's cards.
BATCH_NAMES_SHOWN = 5


def not_a_pic(ctx: Context) -> Reply:
    return Reply(ctx.t("pic.only"))


def _no_longer_pic(ctx: Context) -> list[Reply]:
    """A PIC flow's question when the appointment ended meanwhile: any answer leads to the
    main menu (the step's handler ends the flow for someone who is not a PIC)."""
    return [Reply(ctx.t("pic.only"), options=(ctx.option("stop", ctx.t("menu.back_to_menu")),))]


def describe(ctx: Context, item: Enrollment) -> str:
    """All fields of an enrollment for the PIC, NIK masked."""
    t = ctx.t
    lines = t(
        "pic.enrollment",
        name=item.worker_name,
        nik=item.nik_masked,
        birth_date=t.date(item.birth_date),
        birth_note=t("pic.birth_differs") if item.birth_date_differs_from_nik else "",
        sex=t(f"sex.{item.sex}"),
        phone=display_phone(item.phone_e164) if item.phone_e164 else t("enroll.summary.no_phone"),
        birth_place=item.birth_place or "-",
        street_address=item.street_address or "-",
        village=item.village,
        district=item.district,
        regency=item.regency or "-",
        relationship=t(f"relationship.of_asn.{item.relationship.value}"),
        occupation=work_label(t, item.occupation, item.occupation_text),
        sponsor=item.sponsor_name,
        nip=item.sponsor_nip,
        plan=t(f"plan.{item.plan.value}"),
        first_month=t.month(item.first_month),
        consent=consent_state(ctx, item),
    )
    if item.correction_count:
        lines += "\n" + t("pic.corrected", count=item.correction_count)
    return lines


async def _correction_note(ctx: Context, role: PicRole, item: Enrollment) -> str:
    """Why the enrollment was returned and which fields the ASN changed since."""
    t = ctx.t
    details = await audit.latest_details(
        ctx.repo.connection,
        "enrollment.resubmit",
        record_type="sponsorship",
        record_id=item.id,
        opd_id=role.opd_id,
    )
    changed = [str(field) for field in (details or {}).get("changed", ())]
    if details is None or "changed" not in details:
        # Corrected before changes were recorded: say only that it was corrected.
        fields = t("pic.corrected.unknown")
    elif changed:
        fields = ", ".join(t(f"enroll.field.{field}") for field in changed)
    else:
        fields = t("notice.resubmitted.nothing_changed")
    return t("pic.corrected.changes", reason=item.return_reason or "-", fields=fields)


# -- home ------------------------------------------------------------------------------


async def home(ctx: Context, role: PicRole) -> Reply:
    """The OPD's summary and the PIC's menu."""
    t = ctx.t
    summary = await workbench.opd_summary(ctx.repo.connection, role.opd_id)
    _, to_confirm = await payments.to_confirm(ctx.repo.connection, opd_id=role.opd_id, limit=0)
    text = t(
        "pic.home",
        opd=role.opd_name,
        waiting=summary.count(S.WAITING_FOR_PIC),
        returned=summary.count(S.RETURNED),
        accepted=summary.count(S.ACCEPTED),
        submitted=summary.count(S.SUBMITTED),
        active=summary.count(S.ACTIVE),
        handed=summary.count(S.CARD_HANDED_OVER),
        lapsed=summary.count(S.LAPSED),
        sponsoring=summary.asn_sponsoring,
        registered=summary.asn_registered,
    )
    options = (
        actions.PicQueue().option(t("pic.menu.queue", count=summary.count(S.WAITING_FOR_PIC))),
        actions.PicExport().option(t("pic.menu.export", count=summary.count(S.ACCEPTED))),
        actions.PicImport().option(t("pic.menu.import")),
        actions.PicCards().option(t("pic.menu.cards", count=summary.count(S.ACTIVE))),
        actions.PicPayments().option(t("pic.menu.payments", count=to_confirm)),
        actions.PicPayroll().option(t("pic.menu.payroll")),
        actions.PicOverdue().option(t("pic.menu.overdue")),
        actions.PicBatches().option(t("pic.menu.batches")),
        actions.PicTickets().option(
            t(
                "pic.menu.questions",
                count=await tickets.count_open(ctx.repo.connection, role.opd_id),
            ),
        ),
        # WhatsApp lists hold ten rows: there the PIC types "/web".
        *(
            (actions.WebLink().option(t("pic.menu.web")),)
            if ctx.event.channel is not Channel.WHATSAPP
            else ()
        ),
        actions.Menu().option(t("menu.back_to_menu")),
    )
    return Reply(text, options=options)


def not_found(ctx: Context, key: str) -> list[Reply]:
    """What a button naming no record of this OPD says (catalogue `key`), with the way back."""
    return [Reply(ctx.t(key), options=(_back_home(ctx),))]


def _back_home(ctx: Context) -> Option:
    return actions.PicHome().option(ctx.t("pic.menu.home"))


def _stop_option(ctx: Context) -> Option:
    """A flow question's way back to the PIC menu (its "stop" answer ends the flow there)."""
    return ctx.option("stop", ctx.t("pic.menu.home"))


class PicFlow(Flow):
    """A PIC flow: it ends, empties or fails on the PIC menu."""

    async def leave(self, ctx: Context) -> Reply:
        role = await ctx.pic()
        # An appointment that ended meanwhile: the main menu, as for anybody.
        return await menus.main_menu(ctx) if role is None else await home(ctx, role)


# -- export ------------------------------------------------------------------------------


async def _batch_file(ctx: Context, role: PicRole, batch: workbench.BatchInfo) -> Document:
    """The batch's collective file; audited, as it carries full NIKs out of the system."""
    # A chat export is one OPD's batch (hundreds of rows): read inside the event's
    # transaction, then written off the event loop. Province-size files go
    # through `sertakan export`, which streams in short transactions.
    rows = [
        row async for row in collective_rows(ctx.repo.connection, ctx.cipher, batch_id=batch.id)
    ]
    await audit.nik_file_released(
        ctx.repo.connection,
        Actor.pic(role.pic_id),
        batch_id=batch.id,
        batch_number=batch.number,
        opd_id=role.opd_id,
        rows=len(rows),
        channel=ctx.event.channel.value,
        now=ctx.now,
    )
    buffer = io.BytesIO()
    await asyncio.to_thread(
        write_collective_xlsx,
        rows,
        buffer,
        batch_number=batch.number,
        opd_name=role.opd_name,
        # The date `sertakan export --batch` writes too: local, not the stored UTC.
        created_at=local_moment(batch.created_at, ctx.config.timezone),
        erased_rows=sum(row.erased for row in rows),
        columns=ctx.config.collective_columns,
    )
    return Document(f"{batch.number}.xlsx", buffer.getvalue(), XLSX_MIME)


async def export(ctx: Context, role: PicRole) -> list[Reply]:
    """The accepted, not-yet-submitted enrollments as the collective file."""
    t = ctx.t
    batch = await workbench.create_batch(
        ctx.repo.connection,
        opd_id=role.opd_id,
        actor=Actor.pic(role.pic_id),
        now=ctx.now,
        zone=ctx.config.timezone,
    )
    if batch is None:
        return [Reply(t("pic.export.nothing"), options=(_back_home(ctx),))]
    document = await _batch_file(ctx, role, batch)
    return [
        Reply(
            t("pic.export.done", number=batch.number, count=batch.row_count),
            document=document,
            options=(
                actions.PicSubmit(batch.id).option(t("pic.export.confirm_sent")),
                _back_home(ctx),
            ),
        )
    ]


async def submit(ctx: Context, role: PicRole, batch_id: int) -> list[Reply]:
    t = ctx.t
    try:
        batch = await workbench.confirm_batch(
            ctx.repo.connection,
            opd_id=role.opd_id,
            batch_id=batch_id,
            actor=Actor.pic(role.pic_id),
            now=ctx.now,
        )
    except ChangeProblem as problem:
        key = "pic.batch.not_found" if problem.reason == "not_found" else "pic.batch.already_sent"
        return [Reply(t(key), options=(_back_home(ctx),))]
    when = batch.submitted_at or ctx.now
    text = t(
        "pic.export.submitted",
        number=batch.number,
        count=batch.row_count,
        date=t.date(when.astimezone(ctx.config.timezone).date()),
    )
    return [Reply(text, options=(_back_home(ctx),))]


async def batches(ctx: Context, role: PicRole) -> list[Reply]:
    t = ctx.t
    recent = await workbench.recent_batches(ctx.repo.connection, opd_id=role.opd_id)
    if not recent:
        return [Reply(t("pic.batches.none"), options=(_back_home(ctx),))]
    options = tuple(
        actions.PicBatch(batch.id).option(
            t(
                f"pic.batches.item.{batch.status.value}",
                number=batch.number,
                count=batch.row_count,
            ),
        )
        for batch in recent
    )
    return [Reply(t("pic.batches.title"), options=(*options, _back_home(ctx)))]


async def resend_batch(ctx: Context, role: PicRole, batch_id: int) -> list[Reply]:
    t = ctx.t
    batch = await workbench.batch(
        ctx.repo.connection,
        opd_id=role.opd_id,
        batch_id=batch_id,
    )
    if batch is None:
        return [Reply(t("pic.batch.not_found"), options=(_back_home(ctx),))]
    document = await _batch_file(ctx, role, batch)
    options: tuple[Option, ...] = (_back_home(ctx),)
    if batch.status is BatchStatus.EXPORTED:
        confirm = actions.PicSubmit(batch.id).option(t("pic.export.confirm_sent"))
        options = (confirm, *options)
    return [
        Reply(
            t(f"pic.batch.file.{batch.status.value}", number=batch.number, count=batch.row_count),
            document=document,
            options=options,
        )
    ]


# -- import ------------------------------------------------------------------------------


def import_help(ctx: Context) -> list[Reply]:
    return [Reply(ctx.t("pic.import.help"), options=(_back_home(ctx),))]


async def import_file(ctx: Context, role: PicRole) -> list[Reply]:
    """A file from BPJS: read it, preview it, keep the preview until the PIC decides."""
    t = ctx.t
    event = ctx.event
    name = event.file_name or t("pic.import.unnamed_file")
    if event.file_too_large:
        return [Reply(t("pic.import.too_large"), options=(_back_home(ctx),))]
    if event.file_content is None:
        return [Reply(t("pic.import.unreadable", file=name), options=(_back_home(ctx),))]
    reading = ctx.file_reading
    if reading is None:
        # In a child process with memory and time limits: a crafted file costs a refusal.
        # (The engine has usually read it already, before its transaction opened.)
        try:
            reading = await read_kpj_file_isolated(
                name,
                event.file_content,
                budget=ctx.config.kpj_file_budget,
                limits=ctx.config.kpj_read_limits,
            )
        except KpjFileError as error:
            reading = error
    if isinstance(reading, KpjFileError):
        text = t(f"pic.import.file.{reading.problem.value}", file=name, detail=reading.detail)
        return [Reply(text, options=(_back_home(ctx),))]
    rows, empty_rows = reading
    preview = await preview_import(
        ctx.repo.connection, ctx.cipher, opd_id=role.opd_id, rows=rows, empty_rows=empty_rows
    )
    import_id = await workbench.stage_import(
        ctx.repo.connection,
        opd_id=role.opd_id,
        preview=preview,
        file_name=name,
        actor=Actor.pic(role.pic_id),
        now=ctx.now,
    )
    lines = [
        t(
            "pic.import.preview",
            file=name,
            total=preview.total_rows,
            matched=len(preview.matched),
            unchanged=preview.unchanged,
            rejected=len(preview.rejected),
            empty=empty_rows,
        )
    ]
    for reason, count in sorted(preview.counts().items(), key=lambda item: -item[1]):
        lines.append(t("pic.import.reason_count", reason=t(f"pic.reject.{reason.value}"), n=count))
    if preview.rejected:
        lines.append(t("pic.import.examples"))
        for row in preview.rejected[:PREVIEW_EXAMPLES]:
            lines.append(
                t(
                    "pic.import.example",
                    row=row.row_number,
                    nik=row.nik_shown,
                    reason=t(f"pic.reject.{row.reason.value}"),
                )
            )
    options: list[Option] = []
    if preview.matched:
        lines.append(t("pic.import.ask_apply", matched=len(preview.matched)))
        options.append(
            actions.PicApply(import_id).option(t("pic.import.apply", matched=len(preview.matched)))
        )
    else:
        lines.append(t("pic.import.nothing_to_apply"))
    options.append(actions.PicDiscard(import_id).option(t("pic.import.discard")))
    return [Reply("\n".join(lines), options=tuple(options))]


async def apply_import(ctx: Context, role: PicRole, import_id: int) -> list[Reply]:
    t = ctx.t
    try:
        count = await workbench.apply_import(
            ctx.repo.connection,
            ctx.notices,
            opd_id=role.opd_id,
            import_id=import_id,
            actor=Actor.pic(role.pic_id),
            now=ctx.now,
        )
    except ChangeProblem as problem:
        key = "pic.import.not_found" if problem.reason == "not_found" else "pic.import.decided"
        return [Reply(t(key), options=(_back_home(ctx),))]
    return [Reply(t("pic.import.applied", count=count), options=(_back_home(ctx),))]


async def discard_import(ctx: Context, role: PicRole, import_id: int) -> list[Reply]:
    t = ctx.t
    try:
        await workbench.cancel_import(
            ctx.repo.connection,
            opd_id=role.opd_id,
            import_id=import_id,
            actor=Actor.pic(role.pic_id),
            now=ctx.now,
        )
    except ChangeProblem as problem:
        key = "pic.import.not_found" if problem.reason == "not_found" else "pic.import.decided"
        return [Reply(t(key), options=(_back_home(ctx),))]
    return [Reply(t("pic.import.discarded"), options=(_back_home(ctx),))]


# -- verification queue ------------------------------------------------------------------


async def _current(ctx: Context, role: PicRole) -> tuple[Enrollment | None, int]:
    """The enrollment under review (picking the next one when none is chosen)."""
    data = ctx.state.data
    skip = [int(s) for s in data.get("skipped", [])]
    if "sid" in data:
        item = await workbench.enrollment(
            ctx.repo.connection, opd_id=role.opd_id, sponsorship_id=int(data["sid"])
        )
        _, total = await workbench.queue(ctx.repo.connection, opd_id=role.opd_id, limit=0)
        return item, total
    items, total = await workbench.queue(ctx.repo.connection, opd_id=role.opd_id, skip=skip)
    if items:
        data["sid"] = items[0].id
        return items[0], total
    return None, total


async def _next(ctx: Context, role: PicRole, notice: str) -> Outcome:
    """Move to the next waiting enrollment, or end when the queue is done."""
    data = ctx.state.data
    data.pop("sid", None)
    item, _ = await _current(ctx, role)
    if item is None:
        return Done(
            [Reply(notice), Reply(ctx.t("pic.queue.empty")), await home(ctx, role)],
            show_menu=False,
        )
    return Goto(ReviewStep.name, notice=notice)


class ReviewStep(Step):
    name = "review"
    help_key = "pic.help.review"
    free_text = False

    async def ask(self, ctx: Context) -> list[Reply]:
        role = await ctx.pic()
        if role is None:
            return _no_longer_pic(ctx)
        item, total = await _current(ctx, role)
        if item is None:
            # Emptied meanwhile (another PIC, a resumed draft): the way back stays.
            return [Reply(ctx.t("pic.queue.empty"), options=(_stop_option(ctx),))]
        if item.status is not S.WAITING_FOR_PIC:
            # Decided by another PIC since it was shown: its buttons no longer apply
            # (pressed, they are stale), only "next" and the way back.
            return [
                Reply(
                    ctx.t("pic.queue.handled_meanwhile", name=item.worker_name),
                    options=(
                        ctx.option("next", ctx.t("pic.queue.next")),
                        _stop_option(ctx),
                    ),
                )
            ]
        text = ctx.t("pic.queue.title", total=total) + "\n\n" + describe(ctx, item)
        if item.correction_count:
            text += "\n" + await _correction_note(ctx, role, item)
        # Without the worker's consent (PRODUCT 4.6) there is no accept: the text says why.
        waits = waiting_reason(ctx, item)
        if waits is not None:
            text += "\n\n" + waits
        options = (
            *(() if waits else (ctx.option("accept", ctx.t("pic.queue.accept")),)),
            *((ctx.option("form", ctx.t("pic.consent_form.record")),) if waits else ()),
            ctx.option("return", ctx.t("pic.queue.return")),
            ctx.option("skip", ctx.t("pic.queue.skip")),
            ctx.option("stop", ctx.t("pic.queue.stop")),
        )
        # A signed form's scan shows with the enrollment (PRODUCT 4.6).
        scan = await form_scan(ctx, item.id) if item.consent_method is ConsentMethod.FORM else None
        return [Reply(text, options=options, attachment=scan)]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        role = await ctx.pic()
        if role is None:
            return Done([not_a_pic(ctx)])
        data = ctx.state.data
        if answer.choice == "stop":
            return Done([Reply(ctx.t("pic.queue.stopped")), await home(ctx, role)], show_menu=False)
        if "sid" not in data or answer.choice == "next":
            return await _next(ctx, role, ctx.t("pic.queue.refreshed"))
        sid = int(data["sid"])
        if answer.choice == "skip":
            data["skipped"] = [*data.get("skipped", []), sid]
            return await _next(ctx, role, ctx.t("pic.queue.skipped"))
        if answer.choice == "return":
            return Goto(ReasonStep.name)
        if answer.choice == "form":
            return Goto(FormScanStep.name)
        try:
            await workbench.accept(
                ctx.repo.connection,
                ctx.notices,
                opd_id=role.opd_id,
                sponsorship_id=sid,
                pic_id=role.pic_id,
                now=ctx.now,
                require_consent=not ctx.config.accept_without_consent,
            )
        except ChangeProblem as problem:
            if problem.reason == "no_consent":
                return Invalid(ctx.t("pic.queue.no_consent"))
            return await _next(ctx, role, ctx.t("pic.queue.already_handled"))
        item = await workbench.enrollment(
            ctx.repo.connection, opd_id=role.opd_id, sponsorship_id=sid
        )
        name = item.worker_name if item else ""
        return await _next(ctx, role, ctx.t("pic.queue.accepted", name=name))


class ReasonStep(Step):
    """A common reason, or the PIC's own words."""

    name = "reason"
    help_key = "pic.help.reason"

    def applies(self, ctx: Context) -> bool:
        return False  # reached from the review step only

    async def ask(self, ctx: Context) -> list[Reply]:
        options = tuple(
            ctx.option(reason.value, ctx.t(f"return_reason.{reason.value}"))
            for reason in ReturnReason
        )
        return [Reply(ctx.t("pic.return.ask_reason"), options=options)]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        role = await ctx.pic()
        if role is None:
            return Done([not_a_pic(ctx)])
        if answer.choice == ReturnReason.OTHER.value:
            return Goto(ReasonTextStep.name)
        if answer.choice is not None:
            code: ReturnReason | None = ReturnReason(answer.choice)
            text = ctx.t(f"return_reason.{answer.choice}")
        else:
            typed = parse_note(answer.text or "")
            if isinstance(typed, TextProblem):
                return Invalid(ctx.t("pic.return.reason_invalid"))
            code, text = None, typed
        return await _return(ctx, role, code, text)


class ReasonTextStep(Step):
    name = "reason_text"
    help_key = "pic.help.reason"

    def applies(self, ctx: Context) -> bool:
        return False

    async def ask(self, ctx: Context) -> list[Reply]:
        return [Reply(ctx.t("pic.return.type_reason"))]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        role = await ctx.pic()
        if role is None:
            return Done([not_a_pic(ctx)])
        typed = parse_note(answer.text or "")
        if isinstance(typed, TextProblem):
            return Invalid(ctx.t("pic.return.reason_invalid"))
        return await _return(ctx, role, ReturnReason.OTHER, typed)


async def _return(ctx: Context, role: PicRole, code: ReturnReason | None, text: str) -> Outcome:
    sid = int(ctx.state.data.get("sid", -1))
    try:
        await workbench.return_enrollment(
            ctx.repo.connection,
            ctx.notices,
            opd_id=role.opd_id,
            sponsorship_id=sid,
            pic_id=role.pic_id,
            reason_code=code,
            reason_text=text,
            now=ctx.now,
        )
    except ChangeProblem:
        return await _next(ctx, role, ctx.t("pic.queue.already_handled"))
    return await _next(ctx, role, ctx.t("pic.queue.returned", reason=text))


class VerifyFlow(PicFlow):
    name = "verify"
    title_key = "flow.title.verify"
    steps = (ReviewStep(), ReasonStep(), ReasonTextStep(), FormScanStep())

    async def can_start(self, ctx: Context) -> str | None:
        role = await ctx.pic()
        if role is None:
            return ctx.t("pic.only")
        items, _ = await workbench.queue(ctx.repo.connection, opd_id=role.opd_id)
        if not items:
            return ctx.t("pic.queue.empty")
        return None


# -- cards handed over -------------------------------------------------------------------


#: Longest name search the PIC may type (a name's part; the column holds 120).
SEARCH_MAX_CHARS = 60


async def _after_hand_over(ctx: Context, role: PicRole, notice: str) -> Outcome:
    """Back to the card list with `notice`, or to the PIC menu when no card is left."""
    _, remaining = await workbench.cards_to_hand_out(
        ctx.repo.connection, opd_id=role.opd_id, limit=0
    )
    if remaining == 0:
        return Done([Reply(notice), await home(ctx, role)], show_menu=False)
    if ctx.state.data.get("q"):
        _, found = await workbench.cards_to_hand_out(
            ctx.repo.connection, opd_id=role.opd_id, limit=0, name=str(ctx.state.data["q"])
        )
        if found == 0:
            # Every card the search found is handed over: the whole list again.
            ctx.state.data.pop("q", None)
            ctx.state.data["page"] = 0
    return Goto(PickCardStep.name, notice=notice, rewind=True)


class PickCardStep(Step):
    """The cards still to hand over, a page at a time: one card (a button, or its KPJ
    typed), a whole batch (confirmed with its count), or a name typed to search."""

    name = "pick"
    help_key = "pic.help.cards"

    async def ask(self, ctx: Context) -> list[Reply]:
        role = await ctx.pic()
        if role is None:
            return _no_longer_pic(ctx)
        t, data = ctx.t, ctx.state.data
        connection = ctx.repo.connection
        _, total = await workbench.cards_to_hand_out(connection, opd_id=role.opd_id, limit=0)
        if total == 0:
            return [Reply(t("pic.cards.none"), options=(_stop_option(ctx),))]
        query = str(data.get("q") or "") or None
        page = int(data.get("page", 0))
        cards, found = await workbench.cards_to_hand_out(
            connection, opd_id=role.opd_id, limit=CARDS_SHOWN, offset=page * CARDS_SHOWN,
            name=query,
        )  # fmt: skip
        if not cards and page > 0:
            # Cards handed over meanwhile emptied this page: show the last one there is.
            page = data["page"] = max(0, (found - 1) // CARDS_SHOWN)
            cards, found = await workbench.cards_to_hand_out(
                connection, opd_id=role.opd_id, limit=CARDS_SHOWN, offset=page * CARDS_SHOWN,
                name=query,
            )  # fmt: skip
        lines = [t("pic.cards.title", total=total)]
        if query is not None:
            lines.append(t("pic.cards.search_result", query=query, count=found))
        if found > len(cards):
            first = page * CARDS_SHOWN + 1
            lines.append(t("pic.cards.page", first=first, last=first + len(cards) - 1, count=found))
        lines.append(t("pic.cards.how"))
        options: list[Option] = []
        if query is None:
            options += [
                ctx.option(f"b:{number}", t("pic.cards.batch", number=number, count=count))
                for number, count in await workbench.batches_with_cards(
                    connection, opd_id=role.opd_id
                )
            ]
        options += [
            ctx.option(
                f"c:{card.id}", t("pic.cards.one", name=card.worker_name, kpj=card.kpj or "")
            )
            for card in cards
        ]
        if page > 0:
            options.append(ctx.option("prev", t("pic.cards.prev")))
        if (page + 1) * CARDS_SHOWN < found:
            options.append(ctx.option("next", t("pic.cards.next")))
        if query is not None:
            options.append(ctx.option("all", t("pic.cards.all")))
        options.append(ctx.option("stop", t("pic.queue.stop")))
        return [Reply("\n".join(lines), options=tuple(options))]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        role = await ctx.pic()
        if role is None:
            return Done([not_a_pic(ctx)])
        connection = ctx.repo.connection
        data = ctx.state.data
        choice = answer.choice or ""
        if choice.startswith("c:") and any(char.isalpha() for char in answer.text or ""):
            # Typed words that begin one card's label ("Sri") are a search, never a
            # hand-over nobody pressed (the engine matches typed first words to options).
            choice = ""
        if choice == "stop":
            return Done([await home(ctx, role)], show_menu=False)
        if choice in ("prev", "next"):
            data["page"] = max(0, int(data.get("page", 0)) + (1 if choice == "next" else -1))
            return Goto(PickCardStep.name, rewind=True)
        if choice == "all":
            data.pop("q", None)
            data["page"] = 0
            return Goto(PickCardStep.name, rewind=True)
        if choice.startswith("b:"):
            number = choice[2:]
            counts = dict(await workbench.batches_with_cards(connection, opd_id=role.opd_id))
            if number not in counts:
                return await _after_hand_over(ctx, role, ctx.t("pic.cards.already_handed"))
            data["batch"], data["batch_count"] = number, counts[number]
            return Goto(ConfirmBatchStep.name)
        if choice.startswith("c:"):
            sid = record_id(choice[2:]) or -1
        else:
            text = " ".join((answer.text or "").split())
            if any(char.isalpha() for char in text):
                return await self._search(ctx, role, text)
            kpj = parse_kpj(text)
            if isinstance(kpj, KpjProblem):
                return Invalid(ctx.t("pic.cards.kpj_invalid"))
            found = await workbench.find_active_by_kpj(connection, opd_id=role.opd_id, kpj=kpj)
            if found is None:
                return Invalid(ctx.t("pic.cards.kpj_unknown", kpj=kpj))
            sid = found.id
        try:
            await workbench.hand_over(
                connection, opd_id=role.opd_id, actor=Actor.pic(role.pic_id), now=ctx.now,
                sponsorship_id=sid,
            )  # fmt: skip
        except ChangeProblem:
            return await _after_hand_over(ctx, role, ctx.t("pic.cards.already_handed"))
        item = await workbench.enrollment(connection, opd_id=role.opd_id, sponsorship_id=sid)
        notice = ctx.t("pic.cards.one_done", name=item.worker_name if item else "")
        return await _after_hand_over(ctx, role, notice)

    async def _search(self, ctx: Context, role: PicRole, text: str) -> Outcome:
        """A typed name (or part of one): the list shows only the cards it finds."""
        if len(text) < 2 or len(text) > SEARCH_MAX_CHARS:
            return Invalid(ctx.t("pic.cards.search_length", max=SEARCH_MAX_CHARS))
        _, found = await workbench.cards_to_hand_out(
            ctx.repo.connection, opd_id=role.opd_id, limit=0, name=text
        )
        if found == 0:
            # The list as it was stays (its page and any earlier search).
            return Invalid(ctx.t("pic.cards.search_none", query=text))
        ctx.state.data["q"] = text
        ctx.state.data["page"] = 0
        return Goto(PickCardStep.name, rewind=True)


class ConfirmBatchStep(Step):
    """A whole batch is many cards: say how many, and which, before marking them."""

    name = "confirm_batch"
    help_key = "pic.help.cards_batch"
    free_text = False

    def applies(self, ctx: Context) -> bool:
        return False  # reached from the card list only

    async def ask(self, ctx: Context) -> list[Reply]:
        role = await ctx.pic()
        if role is None:
            return _no_longer_pic(ctx)
        t, data = ctx.t, ctx.state.data
        number, count = str(data.get("batch", "")), int(data.get("batch_count", 0))
        cards, _ = await workbench.cards_to_hand_out(
            ctx.repo.connection, opd_id=role.opd_id, limit=BATCH_NAMES_SHOWN, batch_number=number
        )
        names = ", ".join(card.worker_name for card in cards)
        if count > len(cards):
            names = t("pic.cards.batch_names_more", names=names, more=count - len(cards))
        options = (
            ctx.option("confirm", t("pic.cards.batch_confirm", count=count)),
            ctx.option("back", t("pic.cards.back_to_list")),
        )
        text = t("pic.cards.batch_ask", count=count, number=number, names=names)
        return [Reply(text, options=options)]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        role = await ctx.pic()
        if role is None:
            return Done([not_a_pic(ctx)])
        data = ctx.state.data
        if answer.choice == "back":
            return Goto(PickCardStep.name, rewind=True)
        number, shown = str(data.get("batch", "")), int(data.get("batch_count", 0))
        counts = dict(await workbench.batches_with_cards(ctx.repo.connection, opd_id=role.opd_id))
        now_waiting = counts.get(number, 0)
        if now_waiting == 0:
            return await _after_hand_over(ctx, role, ctx.t("pic.cards.already_handed"))
        if now_waiting != shown:
            # Cards of the batch handed over (or imported) since the count was shown:
            # the PIC confirms the new count, never one they did not see.
            data["batch_count"] = now_waiting
            return Invalid(ctx.t("pic.cards.batch_changed", count=now_waiting))
        count = await workbench.hand_over(
            ctx.repo.connection, opd_id=role.opd_id, actor=Actor.pic(role.pic_id), now=ctx.now,
            batch_number=number,
        )  # fmt: skip
        data.pop("batch", None)
        data.pop("batch_count", None)
        notice = ctx.t("pic.cards.batch_done", count=count, number=number)
        return await _after_hand_over(ctx, role, notice)


class HandoverFlow(PicFlow):
    name = "handover"
    title_key = "flow.title.handover"
    steps = (PickCardStep(), ConfirmBatchStep())

    async def can_start(self, ctx: Context) -> str | None:
        role = await ctx.pic()
        if role is None:
            return ctx.t("pic.only")
        _, total = await workbench.cards_to_hand_out(ctx.repo.connection, opd_id=role.opd_id)
        if total == 0:
            return ctx.t("pic.cards.none")
        return None


# -- payments (PRODUCT 4.4) -------------------------------------------------------------------

#: Common reasons to reject a recorded payment (or the PIC types one).
PAYMENT_REJECT_REASONS = ("unreadable", "amount", "not_received")


async def _payment(ctx: Context, role: PicRole) -> tuple[payments.PaymentToConfirm | None, int]:
    waiting, total = await payments.to_confirm(ctx.repo.connection, opd_id=role.opd_id, limit=50)
    skipped = {int(s) for s in ctx.state.data.get("skipped", [])}
    for payment in waiting:
        if payment.id not in skipped:
            ctx.state.data["pid"] = payment.id
            return payment, total
    ctx.state.data.pop("pid", None)
    return None, total


async def _decide_payment(
    ctx: Context, role: PicRole, *, confirm: bool, reason: str | None
) -> Outcome:
    pid = int(ctx.state.data.get("pid", -1))
    try:
        await payments.decide(
            ctx.repo.connection,
            opd_id=role.opd_id,
            payment_id=pid,
            pic_id=role.pic_id,
            confirm=confirm,
            reason=reason,
            now=ctx.now,
        )
    except ChangeProblem:
        notice = ctx.t("pic.payments.already_decided")
    else:
        await ctx.notices.payment_decided(ctx.repo.connection, pid, now=ctx.now)
        notice = ctx.t("pic.payments.confirmed" if confirm else "pic.payments.rejected")
    payment, _ = await _payment(ctx, role)
    if payment is None:
        return Done(
            [Reply(notice), Reply(ctx.t("pic.payments.none")), await home(ctx, role)],
            show_menu=False,
        )
    return Goto(PaymentReviewStep.name, notice=notice)


def _receipt(ctx: Context, payment: payments.PaymentToConfirm) -> str:
    """Whether a receipt came with the payment, and when the ASN sent one for several workers."""
    if payment.receipt_shared_by > 1:
        return ctx.t("pic.payments.receipt_shared", count=payment.receipt_shared_by)
    return ctx.t("pay.receipt_yes") if payment.has_receipt else ctx.t("pay.receipt_no")


class PaymentReviewStep(Step):
    name = "payment_review"
    help_key = "pic.help.payments"
    free_text = False

    async def ask(self, ctx: Context) -> list[Reply]:
        role = await ctx.pic()
        if role is None:
            return _no_longer_pic(ctx)
        payment, total = await _payment(ctx, role)
        if payment is None:
            return [Reply(ctx.t("pic.payments.none"), options=(_stop_option(ctx),))]
        t = ctx.t
        text = t(
            "pic.payments.item",
            total=total,
            name=payment.worker_name,
            sponsor=payment.sponsor_name,
            months=t.months(
                payment.first_month, add_months(payment.first_month, payment.months - 1)
            ),
            count=payment.months,
            amount=t.money(payment.amount),
            receipt=_receipt(ctx, payment),
        )
        options = (
            ctx.option("confirm", t("pic.payments.confirm")),
            ctx.option("reject", t("pic.payments.reject")),
            ctx.option("skip", t("pic.queue.skip")),
            ctx.option("stop", t("pic.queue.stop")),
        )
        # The receipt itself, when the PIC is on the platform the ASN sent it on
        # (elsewhere its reference means nothing; the text says one exists).
        attachment = None
        if payment.receipt_file_ref is not None and payment.receipt_channel is not None:
            attachment = receipt_file(payment.receipt_file_ref, payment.receipt_channel)
        return [Reply(text, options=options, attachment=attachment)]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        role = await ctx.pic()
        if role is None:
            return Done([not_a_pic(ctx)])
        if answer.choice == "stop":
            return Done([await home(ctx, role)], show_menu=False)
        if answer.choice == "skip":
            ctx.state.data["skipped"] = [
                *ctx.state.data.get("skipped", []),
                ctx.state.data.get("pid"),
            ]
            payment, _ = await _payment(ctx, role)
            if payment is None:
                return Done(
                    [Reply(ctx.t("pic.payments.none")), await home(ctx, role)], show_menu=False
                )
            return Goto(PaymentReviewStep.name)
        if answer.choice == "reject":
            return Goto(PaymentRejectStep.name)
        return await _decide_payment(ctx, role, confirm=True, reason=None)


class PaymentRejectStep(Step):
    name = "payment_reject"
    help_key = "pic.help.reason"

    def applies(self, ctx: Context) -> bool:
        return False

    async def ask(self, ctx: Context) -> list[Reply]:
        options = tuple(
            ctx.option(key, ctx.t(f"pic.payments.reason.{key}")) for key in PAYMENT_REJECT_REASONS
        )
        return [Reply(ctx.t("pic.payments.ask_reason"), options=options)]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        role = await ctx.pic()
        if role is None:
            return Done([not_a_pic(ctx)])
        if answer.choice is not None:
            reason = ctx.t(f"pic.payments.reason.{answer.choice}")
        else:
            typed = parse_note(answer.text or "")
            if isinstance(typed, TextProblem):
                return Invalid(ctx.t("pic.return.reason_invalid"))
            reason = typed
        return await _decide_payment(ctx, role, confirm=False, reason=reason)


class PaymentsFlow(PicFlow):
    name = "pic_payments"
    title_key = "flow.title.pic_payments"
    steps = (PaymentReviewStep(), PaymentRejectStep())

    async def can_start(self, ctx: Context) -> str | None:
        role = await ctx.pic()
        if role is None:
            return ctx.t("pic.only")
        _, total = await payments.to_confirm(ctx.repo.connection, opd_id=role.opd_id, limit=0)
        return None if total else ctx.t("pic.payments.none")


#: Names listed in the payroll preview (the count and total cover all of them).
PAYROLL_SHOWN = 30


def _payroll_month_arg(ctx: Context, month: date) -> date | None:
    """The month of a payroll button when it is this month or last month, else None."""
    this_month = ctx.today.replace(day=1)
    return month if month in (this_month, add_months(this_month, -1)) else None


def _start_of_today(ctx: Context) -> datetime:
    """Midnight of the local day: payroll marks made since then may be undone."""
    return datetime.combine(ctx.today, time(0), ctx.config.timezone)


def _payroll_amount(ctx: Context, month: date) -> int:
    return ctx.config.tariff.dues_for_months(month, 1, funding=FundingSource.PAYROLL_DEDUCTION)


async def _undo_option(ctx: Context, role: PicRole, month: date) -> tuple[Option, ...]:
    """The undo button of `month`, when this OPD's payroll marks of it were made today."""
    marked = await payments.payroll_marked_since(
        ctx.repo.connection, opd_id=role.opd_id, month=month, since=_start_of_today(ctx)
    )
    if not marked:
        return ()
    label = ctx.t("pic.payroll.undo", month=ctx.t.month(month))
    return (actions.PicPayrollUndo(month).option(label),)


async def payroll_month(ctx: Context, role: PicRole, chosen: date | None) -> list[Reply]:
    """Payroll deduction: this month and last month with how many are
    unpaid; a month shows who and how much before anything is marked (`payroll_preview`).
    Refused when nobody in the OPD is on payroll deduction."""
    t = ctx.t
    if chosen is not None:
        month = _payroll_month_arg(ctx, chosen)
        if month is None:
            return [Reply(t("pic.payroll.invalid"), options=(_back_home(ctx),))]
        return await payroll_preview(ctx, role, month)
    this_month = ctx.today.replace(day=1)
    options: list[Option] = []
    undo: list[Option] = []
    for month in (this_month, add_months(this_month, -1)):
        lines = await payments.payroll_month(ctx.repo.connection, opd_id=role.opd_id, month=month)
        if not lines:
            continue
        unpaid = sum(1 for line in lines if not line.paid)
        label = (
            t("pic.payroll.option", month=t.month(month), unpaid=unpaid, total=len(lines))
            if unpaid
            else t("pic.payroll.option_done", month=t.month(month))
        )
        options.append(actions.PicPayroll(month).option(label))
        undo.extend(await _undo_option(ctx, role, month))
    if not options:
        return [Reply(t("pic.payroll.nobody", opd=role.opd_name), options=(_back_home(ctx),))]
    return [Reply(t("pic.payroll.ask"), options=(*options, *undo, _back_home(ctx)))]


async def payroll_preview(
    ctx: Context, role: PicRole, month: date, *, changed: bool = False
) -> list[Reply]:
    """Who is marked paid for `month` and how much, with a confirmation button carrying
    the count (a list that changed before the press is shown again, not marked)."""
    t = ctx.t
    lines = await payments.payroll_month(ctx.repo.connection, opd_id=role.opd_id, month=month)
    back = (actions.PicPayroll().option(t("pic.payroll.other_month")), _back_home(ctx))
    if not lines:
        return [Reply(t("pic.payroll.nobody", opd=role.opd_name), options=(_back_home(ctx),))]
    todo = [line for line in lines if not line.paid]
    paid = len(lines) - len(todo)
    undo = await _undo_option(ctx, role, month)
    if not todo:
        text = t("pic.payroll.all_paid", month=t.month(month), count=paid)
        return [Reply(text, options=(*undo, *back))]
    amount = _payroll_amount(ctx, month)
    names = [
        t("pic.payroll.line", name=line.worker_name, sponsor=line.sponsor_name)
        for line in todo[:PAYROLL_SHOWN]
    ]
    if len(todo) > PAYROLL_SHOWN:
        names.append(t("pic.payroll.more", count=len(todo) - PAYROLL_SHOWN))
    parts = [t("pic.payroll.changed")] if changed else []
    parts.append(
        t(
            "pic.payroll.preview",
            month=t.month(month),
            count=len(todo),
            amount=t.money(amount),
            total=t.money(amount * len(todo)),
            names="\n".join(names),
        )
    )
    if paid:
        parts.append(t("pic.payroll.already", month=t.month(month), count=paid))
    confirm = actions.PicPayrollConfirm(month, actions.Count(len(todo))).option(
        t("pic.payroll.confirm", month=t.month(month), count=len(todo)),
    )
    return [Reply("\n\n".join(parts), options=(confirm, *undo, *back))]


async def payroll_confirm(ctx: Context, role: PicRole, chosen: date, shown: int) -> list[Reply]:
    """Mark month `chosen` paid for the unpaid payroll sponsorships the PIC was shown
    (`shown` of them); audited, undoable the same day."""
    t = ctx.t
    month = _payroll_month_arg(ctx, chosen)
    if month is None:
        return [Reply(t("pic.payroll.invalid"), options=(_back_home(ctx),))]
    lines = await payments.payroll_month(ctx.repo.connection, opd_id=role.opd_id, month=month)
    unpaid = sum(1 for line in lines if not line.paid)
    if not unpaid or shown != unpaid:
        # Someone joined, left or was marked since the preview: show it again.
        return await payroll_preview(ctx, role, month, changed=bool(unpaid))
    amount = _payroll_amount(ctx, month)
    count = await payments.mark_payroll_month(
        ctx.repo.connection,
        opd_id=role.opd_id,
        month=month,
        amount=amount,
        pic_id=role.pic_id,
        now=ctx.now,
    )
    await dues_queries.cancel_payroll_lines(ctx.repo.connection, opd_id=role.opd_id, month=month)
    text = t("pic.payroll.done", month=t.month(month), count=count, total=t.money(amount * count))
    undo = await _undo_option(ctx, role, month)
    return [Reply(text, options=(*undo, _back_home(ctx)))]


async def payroll_undo(ctx: Context, role: PicRole, chosen: date) -> list[Reply]:
    """Take back today's payroll marks of a month (audited); other days' marks stay."""
    t = ctx.t
    month = _payroll_month_arg(ctx, chosen)
    if month is None:
        return [Reply(t("pic.payroll.invalid"), options=(_back_home(ctx),))]
    undone = await payments.undo_payroll_month(
        ctx.repo.connection,
        opd_id=role.opd_id,
        month=month,
        since=_start_of_today(ctx),
        pic_id=role.pic_id,
        now=ctx.now,
    )
    key = "pic.payroll.undone" if undone else "pic.payroll.nothing_to_undo"
    options = (actions.PicPayroll().option(t("pic.payroll.other_month")), _back_home(ctx))
    return [Reply(t(key, month=t.month(month), count=undone), options=options)]


async def overdue(ctx: Context, role: PicRole) -> list[Reply]:
    """The OPD's sponsorships with unpaid months past their due date, most in arrears first."""
    t = ctx.t
    found = await payments.in_arrears(
        ctx.repo.connection,
        opd_id=role.opd_id,
        today=ctx.today,
        calendar=ctx.config.calendar,
        tariff=ctx.config.tariff,
    )
    if not found:
        return [Reply(t("pic.overdue.none"), options=(_back_home(ctx),))]
    lines = [t("pic.overdue.title", count=len(found))]
    for item in found[:OVERDUE_SHOWN]:
        lines.append(
            t(
                "pic.overdue.line",
                name=item.worker_name,
                sponsor=item.sponsor_name,
                arrears=item.status.months_in_arrears,
                month=t.month(item.status.next_month),
            )
        )
    return [Reply("\n".join(lines), options=(_back_home(ctx),))]


#: Overdue sponsorships listed in the chat (all of them are in the count).
OVERDUE_SHOWN = 30
