"""The web workbench's pages (issue 13): verification queue, batches and cards, payments,
audit log and outbox. Each action calls the storage function the chat calls, in
one transaction with its audit entry and notices; a record outside the person's
OPD is "not found" (404) and nothing changes.
"""

from __future__ import annotations

import asyncio
import io
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, time, timedelta
from typing import Any

from aiohttp import BodyPartReader, web
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bot.web.app import (
    PREFIX,
    ReceiptProblem,
    Visit,
    opd_choices,
    parts_of,
    refuse,
    render,
    scoped_opd,
    visit_of,
)
from domain.local_time import local_moment
from domain.months import add_months
from domain.vocabulary import ReturnReason, SponsorshipStatus, WorkerConsent
from handlers.parsing import TextProblem, parse_note, record_id
from storage import audit, outbox, payments, web_queries, workbench
from storage.collective import collective_rows, preview_import
from storage.collective_file import KpjFileError, write_collective_xlsx
from storage.isolated_read import read_kpj_file_isolated
from storage.web_access import WebRole
from storage.web_queries import QueueCursor
from storage.workbench import ChangeProblem

XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
#: Rows per page of every table.
PAGE_SIZE = 50
#: Common reasons to reject a recorded payment (the chat's list).
PAYMENT_REJECT_REASONS = ("unreadable", "amount", "not_received")


def _page(request: web.Request) -> int:
    number = record_id(request.query.get("page", "1")) or 1
    return max(1, min(number, 100_000))


def _ids(values: Sequence[Any]) -> list[int]:
    """Record ids from form fields; anything that is not one is left out (finds nothing)."""
    found = [record_id(str(value)) for value in values]
    return [value for value in found if value is not None][: PAGE_SIZE * 4]


def _one_id(request: web.Request) -> int:
    return record_id(request.match_info.get("id", "")) or -1


async def _form(request: web.Request) -> Any:
    return await request.post()


def _text(form: Any, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


async def _all_of_opd(database: AsyncEngine, opd_id: int, ids: Sequence[int]) -> bool:
    """Whether every id is an enrollment of the OPD (checked before anything changes)."""
    async with database.begin() as connection:
        for sid in ids:
            if await workbench.enrollment(connection, opd_id=opd_id, sponsorship_id=sid) is None:
                return False
    return True


def _need_pic(request: web.Request) -> Visit | web.Response:
    """Deciding on an enrollment or a payment is the PIC's work (as in the chat)."""
    visit = visit_of(request)
    if visit.access.pic is None:
        return refuse(request, 403, "web.pic_only")
    return visit


def _landed(
    request: web.Request, page: str, opd_id: int | None, response: web.Response
) -> web.Response:
    """A page shown after an action (a POST): htmx puts the page's own address in the
    address bar (HX-Push-Url), not the action's, so a reload or a filter GETs the page."""
    if request.method == "POST":
        chosen = opd_id is not None and visit_of(request).access.pic is None
        response.headers["HX-Push-Url"] = f"{PREFIX}/{page}" + (f"?opd={opd_id}" if chosen else "")
    return response


async def _opd_or_choice(
    request: web.Request, connection: AsyncConnection, template: str, chosen: str | None
) -> tuple[int, str] | web.Response:
    found = await scoped_opd(request, connection, chosen=chosen)
    if found is None:
        choices = await opd_choices(connection)
        return render(request, "choose_opd.html", {"choices": choices, "target": template})
    return found


# -- verification queue -------------------------------------------------------------------


async def queue_page(request: web.Request, notices: Sequence[str] = ()) -> web.Response:
    parts = parts_of(request)
    visit = visit_of(request)
    query = request.query
    consent_text = query.get("consent", "")
    consent = WorkerConsent(consent_text) if consent_text in set(WorkerConsent) else None
    where = web_queries.QueueFilter(name=query.get("q", "").strip()[:60], consent=consent)
    async with parts.database.begin() as connection:
        scope = await _opd_or_choice(request, connection, "queue", query.get("opd"))
        if isinstance(scope, web.Response):
            return scope
        found = await web_queries.queue_page(
            connection,
            opd_id=scope[0],
            where=where,
            limit=PAGE_SIZE,
            after=QueueCursor.parse(query.get("after", "")),
            before=QueueCursor.parse(query.get("before", "")),
        )
    return _landed(
        request,
        "queue",
        scope[0],
        render(
            request,
            "queue.html",
            {
                "opd": scope,
                "items": found.items,
                "total": found.total,
                "before": found.before.token() if found.before else None,
                "after": found.after.token() if found.after else None,
                "where": where,
                "consents": list(WorkerConsent),
                "reasons": list(ReturnReason),
                "notices": notices,
                "can_decide": visit.access.pic is not None,
                "needs_consent": not parts.engine.config.accept_without_consent,
            },
        ),
    )


async def _each_enrollment(
    database: AsyncEngine,
    opd_id: int,
    ids: Sequence[int],
    decide: Callable[[AsyncConnection, workbench.Enrollment], Awaitable[str]],
    refused: Callable[[ChangeProblem, workbench.Enrollment], str],
) -> list[str]:
    """`decide` each enrollment in its own transaction, as pressing the chat's button once
    per enrollment would: one refusal (`refused` says it) does not undo the others. The ids
    were checked to be the OPD's before."""
    notices: list[str] = []
    for sid in ids:
        async with database.begin() as connection:
            item = await workbench.enrollment(connection, opd_id=opd_id, sponsorship_id=sid)
            assert item is not None
            try:
                notices.append(await decide(connection, item))
            except ChangeProblem as problem:
                notices.append(refused(problem, item))
    return notices


async def queue_accept(request: web.Request) -> web.Response:
    checked = _need_pic(request)
    if isinstance(checked, web.Response):
        return checked
    parts, role, t = parts_of(request), checked.access.pic, checked.t
    assert role is not None
    form = await _form(request)
    ids = _ids(form.getall("id", []))
    if not ids:
        return await queue_page(request, [t("web.queue.none_chosen")])
    if not await _all_of_opd(parts.database, role.opd_id, ids):
        # Another OPD's id (forged) or one that does not exist: nothing changes.
        return refuse(request, 404, "web.not_found")
    now, require_consent = parts.clock(), not parts.engine.config.accept_without_consent

    async def accept(connection: AsyncConnection, item: workbench.Enrollment) -> str:
        await workbench.accept(
            connection,
            parts.engine.notices,
            opd_id=role.opd_id,
            sponsorship_id=item.id,
            pic_id=role.pic_id,
            now=now,
            require_consent=require_consent,
        )
        return t("pic.queue.accepted", name=item.worker_name)

    def refused(problem: ChangeProblem, item: workbench.Enrollment) -> str:
        if problem.reason == "no_consent":
            return f"{item.worker_name}: {t('pic.queue.no_consent')}"
        return t("pic.queue.already_handled")

    notices = await _each_enrollment(parts.database, role.opd_id, ids, accept, refused)
    return await queue_page(request, notices)


async def queue_return(request: web.Request) -> web.Response:
    checked = _need_pic(request)
    if isinstance(checked, web.Response):
        return checked
    parts, role, t = parts_of(request), checked.access.pic, checked.t
    assert role is not None
    form = await _form(request)
    ids = _ids(form.getall("id", []))
    code_text = _text(form, "reason")
    if not ids:
        return await queue_page(request, [t("web.queue.none_chosen")])
    code = ReturnReason(code_text) if code_text in set(ReturnReason) else None
    if code is None or code is ReturnReason.OTHER:
        typed = parse_note(_text(form, "reason_text"))
        if isinstance(typed, TextProblem):
            return await queue_page(request, [t("pic.return.reason_invalid")])
        text = typed
        code = ReturnReason.OTHER
    else:
        text = t(f"return_reason.{code.value}")
    if not await _all_of_opd(parts.database, role.opd_id, ids):
        return refuse(request, 404, "web.not_found")
    now = parts.clock()

    async def give_back(connection: AsyncConnection, item: workbench.Enrollment) -> str:
        await workbench.return_enrollment(
            connection,
            parts.engine.notices,
            opd_id=role.opd_id,
            sponsorship_id=item.id,
            pic_id=role.pic_id,
            reason_code=code,
            reason_text=text,
            now=now,
        )
        return f"{item.worker_name}: {t('pic.queue.returned', reason=text)}"

    def refused(problem: ChangeProblem, item: workbench.Enrollment) -> str:
        return t("pic.queue.already_handled")

    notices = await _each_enrollment(parts.database, role.opd_id, ids, give_back, refused)
    return await queue_page(request, notices)


async def show_nik(request: web.Request) -> web.Response:
    checked = _need_pic(request)
    if isinstance(checked, web.Response):
        return checked
    parts, role = parts_of(request), checked.access.pic
    assert role is not None
    async with parts.database.begin() as connection:
        nik = await web_queries.show_nik(
            connection,
            parts.cipher,
            opd_id=role.opd_id,
            sponsorship_id=_one_id(request),
            actor=checked.access.actor,
            now=parts.clock(),
        )
    if nik is None:
        return refuse(request, 404, "web.not_found")
    return render(request, "nik.html", {"nik": nik, "sid": _one_id(request)})


# -- batches and cards ---------------------------------------------------------------------


async def batches_page(request: web.Request, notices: Sequence[str] = ()) -> web.Response:
    parts = parts_of(request)
    async with parts.database.begin() as connection:
        scope = await _opd_or_choice(request, connection, "batches", request.query.get("opd"))
        if isinstance(scope, web.Response):
            return scope
        recent = await workbench.recent_batches(connection, opd_id=scope[0], limit=20)
        summary = await workbench.opd_summary(connection, scope[0])
    return _landed(
        request,
        "batches",
        scope[0],
        render(
            request,
            "batches.html",
            {
                "opd": scope,
                "batches": recent,
                "accepted": summary.count(SponsorshipStatus.ACCEPTED),
                "notices": notices,
            },
        ),
    )


async def _acting_scope(
    request: web.Request, connection: AsyncConnection, form: Any
) -> tuple[int, str] | None:
    return await scoped_opd(request, connection, chosen=_text(form, "opd"))


async def batch_export(request: web.Request) -> web.Response:
    parts, visit = parts_of(request), visit_of(request)
    form = await _form(request)
    async with parts.database.begin() as connection:
        scope = await _acting_scope(request, connection, form)
        if scope is None:
            return refuse(request, 404, "web.not_found")
        batch = await workbench.create_batch(
            connection,
            opd_id=scope[0],
            actor=visit.access.actor,
            now=parts.clock(),
            zone=parts.engine.config.timezone,
        )
    if batch is None:
        return await batches_page(request, [visit.t("pic.export.nothing")])
    text = visit.t("pic.export.done", number=batch.number, count=batch.row_count)
    return await batches_page(request, [text])


async def batch_file(request: web.Request) -> web.StreamResponse:
    """The batch's collective file (full NIKs): audited as `batch.download`, channel "web".
    Not for a program leader: their role reads figures, not NIKs."""
    parts, visit = parts_of(request), visit_of(request)
    if visit.access.read_only:
        return refuse(request, 403, "web.read_only")
    async with parts.database.begin() as connection:
        scope = await scoped_opd(request, connection, chosen=request.query.get("opd"))
        batch = (
            None
            if scope is None
            else await workbench.batch(connection, opd_id=scope[0], batch_id=_one_id(request))
        )
        if scope is None or batch is None:
            return refuse(request, 404, "web.not_found")
        rows = [row async for row in collective_rows(connection, parts.cipher, batch_id=batch.id)]
        await audit.nik_file_released(
            connection,
            visit.access.actor,
            batch_id=batch.id,
            batch_number=batch.number,
            opd_id=scope[0],
            rows=len(rows),
            channel="web",
            now=parts.clock(),
        )
    buffer = io.BytesIO()
    await asyncio.to_thread(
        write_collective_xlsx,
        rows,
        buffer,
        batch_number=batch.number,
        opd_name=scope[1],
        created_at=local_moment(batch.created_at, parts.engine.config.timezone),
        erased_rows=sum(row.erased for row in rows),
        columns=parts.engine.config.collective_columns,
    )
    return web.Response(
        body=buffer.getvalue(),
        content_type=XLSX_MIME,
        headers={
            "Content-Disposition": f'attachment; filename="{batch.number}.xlsx"',
            "Cache-Control": "no-store",
        },
    )


async def batch_sent(request: web.Request) -> web.Response:
    parts, visit = parts_of(request), visit_of(request)
    form = await _form(request)
    t = visit.t
    try:
        async with parts.database.begin() as connection:
            scope = await _acting_scope(request, connection, form)
            if scope is None:
                raise ChangeProblem("not_found")
            batch = await workbench.confirm_batch(
                connection,
                opd_id=scope[0],
                batch_id=_one_id(request),
                actor=visit.access.actor,
                now=parts.clock(),
            )
    except ChangeProblem as problem:
        if problem.reason == "not_found":
            return refuse(request, 404, "web.not_found")
        return await batches_page(request, [t("pic.batch.already_sent")])
    when = (batch.submitted_at or parts.clock()).astimezone(parts.engine.config.timezone)
    text = t("pic.export.submitted", number=batch.number, count=batch.row_count, date=t.date(when))
    return await batches_page(request, [text])


async def _read_upload(
    request: web.Request, limit: int
) -> tuple[str, bytes, str] | tuple[None, None, str]:
    """(file name, bytes, chosen OPD) of the multipart upload; (None, None, problem key)
    when there is no file or it is larger than `limit` (read no further than that)."""
    reader = await request.multipart()
    name: str | None = None
    content: bytes | None = None
    chosen = ""
    while True:
        part = await reader.next()
        if part is None:
            break
        if not isinstance(part, BodyPartReader):
            continue
        if part.name == "opd":
            chosen = (await part.text())[:12]
        elif part.name == "file":
            name = (part.filename or "").strip()[:200]
            chunks = bytearray()
            while chunk := await part.read_chunk(64 * 1024):
                chunks += chunk
                if len(chunks) > limit:
                    return None, None, "web.import.too_large"
            content = bytes(chunks)
    if content is None or name is None:
        return None, None, "web.import.no_file"
    return name, content, chosen


async def batch_import(request: web.Request) -> web.Response:
    """A KPJ file from BPJS: read in a child process before any transaction, previewed
    (nothing changes), kept until applied or discarded; the chat's texts."""
    parts, visit = parts_of(request), visit_of(request)
    t = visit.t
    config = parts.engine.config
    limit = min(config.kpj_file_budget.max_file_bytes, parts.settings.max_upload_mb << 20)
    name, content, chosen = await _read_upload(request, limit)
    if name is None or content is None:
        return await batches_page(request, [t(chosen, limit=parts.settings.max_upload_mb)])
    try:
        rows, empty_rows = await read_kpj_file_isolated(
            name, content, budget=config.kpj_file_budget, limits=config.kpj_read_limits
        )
    except KpjFileError as error:
        text = t(f"pic.import.file.{error.problem.value}", file=name, detail=error.detail)
        return await batches_page(request, [text])
    async with parts.database.begin() as connection:
        scope = await scoped_opd(request, connection, chosen=chosen)
        if scope is None:
            return refuse(request, 404, "web.not_found")
        preview = await preview_import(
            connection, parts.cipher, opd_id=scope[0], rows=rows, empty_rows=empty_rows
        )
        import_id = await workbench.stage_import(
            connection,
            opd_id=scope[0],
            preview=preview,
            file_name=name,
            actor=visit.access.actor,
            now=parts.clock(),
        )
    return render(
        request,
        "import_preview.html",
        {
            "opd": scope,
            "file": name,
            "preview": preview,
            "import_id": import_id,
            "counts": sorted(preview.counts().items(), key=lambda item: -item[1]),
            "examples": preview.rejected[:20],
        },
    )


async def import_decide(request: web.Request) -> web.Response:
    parts, visit = parts_of(request), visit_of(request)
    t = visit.t
    form = await _form(request)
    apply = request.match_info["decision"] == "apply"
    count = 0
    try:
        async with parts.database.begin() as connection:
            scope = await _acting_scope(request, connection, form)
            if scope is None:
                raise ChangeProblem("not_found")
            if apply:
                count = await workbench.apply_import(
                    connection,
                    parts.engine.notices,
                    opd_id=scope[0],
                    import_id=_one_id(request),
                    actor=visit.access.actor,
                    now=parts.clock(),
                )
            else:
                await workbench.cancel_import(
                    connection,
                    opd_id=scope[0],
                    import_id=_one_id(request),
                    actor=visit.access.actor,
                    now=parts.clock(),
                )
    except ChangeProblem as problem:
        if problem.reason == "not_found":
            return refuse(request, 404, "web.not_found")
        return await batches_page(request, [t("pic.import.decided")])
    text = t("pic.import.applied", count=count) if apply else t("pic.import.discarded")
    return await batches_page(request, [text])


async def cards_page(request: web.Request, notices: Sequence[str] = ()) -> web.Response:
    parts = parts_of(request)
    query = request.query
    page = _page(request)
    name = query.get("q", "").strip()[:60]
    batch_number = query.get("batch", "").strip()[:40] or None
    async with parts.database.begin() as connection:
        scope = await _opd_or_choice(request, connection, "cards", query.get("opd"))
        if isinstance(scope, web.Response):
            return scope
        cards, total = await workbench.cards_to_hand_out(
            connection,
            opd_id=scope[0],
            limit=PAGE_SIZE,
            offset=(page - 1) * PAGE_SIZE,
            name=name or None,
            batch_number=batch_number,
        )
        by_batch = await workbench.batches_with_cards(connection, opd_id=scope[0])
    return _landed(
        request,
        "cards",
        scope[0],
        render(
            request,
            "cards.html",
            {
                "opd": scope,
                "cards": cards,
                "total": total,
                "page": page,
                "pages": max(1, -(-total // PAGE_SIZE)),
                "q": name,
                "batch": batch_number or "",
                "by_batch": by_batch,
                "notices": notices,
            },
        ),
    )


async def cards_hand_over(request: web.Request) -> web.Response:
    parts, visit = parts_of(request), visit_of(request)
    t = visit.t
    form = await _form(request)
    ids = _ids(form.getall("id", []))
    batch_number = _text(form, "batch")
    count = 0
    try:
        async with parts.database.begin() as connection:
            scope = await _acting_scope(request, connection, form)
            if scope is None:
                raise ChangeProblem("not_found")
            if batch_number:
                count = await workbench.hand_over(
                    connection,
                    opd_id=scope[0],
                    actor=visit.access.actor,
                    now=parts.clock(),
                    batch_number=batch_number,
                )
            else:
                for sid in ids:
                    found = await workbench.enrollment(
                        connection, opd_id=scope[0], sponsorship_id=sid
                    )
                    if found is None:
                        raise ChangeProblem("not_found")
                for sid in ids:
                    count += await workbench.hand_over(
                        connection,
                        opd_id=scope[0],
                        actor=visit.access.actor,
                        now=parts.clock(),
                        sponsorship_id=sid,
                    )
    except ChangeProblem as problem:
        # Raised out of the transaction: it rolled back, so a selection changes all or nothing.
        if problem.reason == "not_found":
            return refuse(request, 404, "web.not_found")
        return await cards_page(request, [t("pic.cards.already_handed")])
    return await cards_page(request, [t("web.cards.handed", count=count)])


# -- payments --------------------------------------------------------------------------------


async def payments_page(request: web.Request, notices: Sequence[str] = ()) -> web.Response:
    parts, visit = parts_of(request), visit_of(request)
    async with parts.database.begin() as connection:
        scope = await _opd_or_choice(request, connection, "payments", request.query.get("opd"))
        if isinstance(scope, web.Response):
            return scope
        waiting, total = await payments.to_confirm(connection, opd_id=scope[0], limit=PAGE_SIZE)
    return _landed(
        request,
        "payments",
        scope[0],
        render(
            request,
            "payments.html",
            {
                "opd": scope,
                "items": waiting,
                "periods": {
                    p.id: visit.t.months(p.first_month, add_months(p.first_month, p.months - 1))
                    for p in waiting
                },
                "total": total,
                "reasons": PAYMENT_REJECT_REASONS,
                "notices": notices,
                "can_decide": visit.access.pic is not None,
            },
        ),
    )


async def payment_decide(request: web.Request) -> web.Response:
    checked = _need_pic(request)
    if isinstance(checked, web.Response):
        return checked
    parts, role, t = parts_of(request), checked.access.pic, checked.t
    assert role is not None
    form = await _form(request)
    confirm = request.match_info["decision"] == "confirm"
    reason: str | None = None
    if not confirm:
        code = _text(form, "reason")
        if code in PAYMENT_REJECT_REASONS:
            reason = t(f"pic.payments.reason.{code}")
        else:
            typed = parse_note(_text(form, "reason_text"))
            if isinstance(typed, TextProblem):
                return await payments_page(request, [t("pic.return.reason_invalid")])
            reason = typed
    payment_id = _one_id(request)
    async with parts.database.begin() as connection:
        try:
            await payments.decide(
                connection,
                opd_id=role.opd_id,
                payment_id=payment_id,
                pic_id=role.pic_id,
                confirm=confirm,
                reason=reason,
                now=parts.clock(),
            )
        except ChangeProblem as problem:
            if problem.reason == "not_found":
                return refuse(request, 404, "web.not_found")
            notice = t("pic.payments.already_decided")
        else:
            await parts.engine.notices.payment_decided(connection, payment_id, now=parts.clock())
            notice = t("pic.payments.confirmed" if confirm else "pic.payments.rejected")
    return await payments_page(request, [notice])


async def payment_receipt(request: web.Request) -> web.StreamResponse:
    """The receipt, fetched from the channel that holds it and streamed (not kept here)."""
    parts = parts_of(request)
    async with parts.database.begin() as connection:
        scope = await scoped_opd(request, connection, chosen=request.query.get("opd"))
        if scope is None:
            return refuse(request, 404, "web.not_found")
        waiting, _ = await payments.to_confirm(
            connection, opd_id=scope[0], payment_id=_one_id(request)
        )
    found = waiting[0] if waiting else None
    if found is None or found.receipt_file_ref is None or found.receipt_channel is None:
        return refuse(request, 404, "web.not_found")
    fetched = await parts.receipts.fetch(found.receipt_channel.value, found.receipt_file_ref)
    if fetched is None or isinstance(fetched, ReceiptProblem):
        problem = fetched or ReceiptProblem.UNAVAILABLE
        status = 404 if problem is ReceiptProblem.GONE else 503
        return refuse(request, status, f"web.payments.receipt_{problem.value}")
    body, content_type = fetched
    # Only images and PDFs are shown inline; anything else is a download.
    inline = content_type.startswith("image/") or content_type == "application/pdf"
    return web.Response(
        body=body,
        content_type=content_type if inline else "application/octet-stream",
        headers={
            "Content-Disposition": "inline" if inline else 'attachment; filename="receipt"',
            "Cache-Control": "no-store",
        },
    )


# -- audit log and outbox -------------------------------------------------------------------


def _local_day(text: str, zone: Any) -> datetime | None:
    try:
        day = datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError:
        return None
    return datetime.combine(day, time(0), zone)


async def audit_page(request: web.Request) -> web.Response:
    parts, visit = parts_of(request), visit_of(request)
    query = request.query
    zone = parts.engine.config.timezone
    since = _local_day(query.get("from", ""), zone)
    until_day = _local_day(query.get("to", ""), zone)
    opd_id = visit.access.pic.opd_id if visit.access.pic is not None else None
    where = web_queries.AuditFilter(
        actor=query.get("actor", "").strip()[:140],
        record=query.get("record", "").strip()[:100],
        action=query.get("action", "").strip()[:64],
        since=since,
        until=until_day + timedelta(days=1) if until_day else None,
        opd_id=opd_id,
    )
    page = _page(request)
    async with parts.database.begin() as connection:
        entries, total = await web_queries.audit_page(
            connection, where=where, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE
        )
    return render(
        request,
        "audit.html",
        {
            "entries": entries,
            "total": total,
            "page": page,
            "pages": max(1, -(-total // PAGE_SIZE)),
            "query": dict(query),
            "query_string": "".join(
                f"{urllib.parse.urlencode({key: value})}&"
                for key, value in query.items()
                if key != "page"
            ),
        },
    )


async def outbox_page(request: web.Request, notices: Sequence[str] = ()) -> web.Response:
    parts, visit = parts_of(request), visit_of(request)
    if visit.access.role is not WebRole.ADMIN:
        return refuse(request, 403, "web.admin_only")
    async with parts.database.begin() as connection:
        counts = await outbox.counts_by_status(connection)
        failed = await outbox.list_failed(connection, limit=PAGE_SIZE)
        oldest = await web_queries.oldest_due(connection, now=parts.clock())
    return _landed(
        request,
        "outbox",
        None,
        render(
            request,
            "outbox.html",
            {
                "counts": counts,
                "failed": failed,
                "oldest": oldest,
                "notices": notices,
            },
        ),
    )


async def outbox_retry(request: web.Request) -> web.Response:
    parts, visit = parts_of(request), visit_of(request)
    if visit.access.role is not WebRole.ADMIN:
        return refuse(request, 403, "web.admin_only")
    outbox_id = _one_id(request)
    now = parts.clock()
    async with parts.database.begin() as connection:
        done = await outbox.requeue_failed(connection, outbox_id, now=now)
        if done:
            await audit.record(
                connection,
                visit.access.actor,
                "outbox.retry",
                record_type="outbox",
                record_id=outbox_id,
                opd_id=None,
                now=now,
            )
    if not done:
        return refuse(request, 404, "web.not_found")
    return await outbox_page(request, [visit.t("web.outbox.retried", id=outbox_id)])


def add_routes(app: web.Application) -> None:
    app.router.add_get("/queue", queue_page)
    app.router.add_post("/queue/accept", queue_accept)
    app.router.add_post("/queue/return", queue_return)
    app.router.add_post("/queue/{id}/nik", show_nik)
    app.router.add_get("/batches", batches_page)
    app.router.add_post("/batches/export", batch_export)
    app.router.add_get("/batches/{id}/file", batch_file)
    app.router.add_post("/batches/{id}/sent", batch_sent)
    app.router.add_post("/batches/import", batch_import)
    app.router.add_post("/imports/{id}/{decision:apply|discard}", import_decide)
    app.router.add_get("/cards", cards_page)
    app.router.add_post("/cards/hand-over", cards_hand_over)
    app.router.add_get("/payments", payments_page)
    app.router.add_post("/payments/{id}/{decision:confirm|reject}", payment_decide)
    app.router.add_get("/payments/{id}/receipt", payment_receipt)
    app.router.add_get("/audit", audit_page)
    app.router.add_get("/outbox", outbox_page)
    app.router.add_post("/outbox/{id}/retry", outbox_retry)


__all__ = ["PREFIX", "add_routes"]
