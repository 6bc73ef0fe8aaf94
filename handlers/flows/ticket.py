"""PRODUCT 4.7 "Tanya PIC": a question to a person, answered in the chat.

- The asker (a registered ASN, or a worker on WhatsApp known by their number)
  types the question, sees it once more and sends it (`AskFlow`). It goes to
  the OPD's reachable PICs; while the OPD has none, to the administrators
  (`storage.admins`), and the asker is told which.
- The PIC (or an administrator) finds the open questions in their menu and
  digest, opens one, answers it in typed text (`AnswerFlow`) and closes it;
  the answer reaches the asker on their own channel through the outbox.

Who may see and answer a question is decided in `storage.tickets` by the
person's own appointment (`Scope`), never by an id they send: a forged or stale
button of another OPD's question answers "not found".
"""

from __future__ import annotations

import dataclasses

from domain.vocabulary import AskerRole, TicketStatus
from handlers import actions, menus
from handlers.context import Context
from handlers.flow import Answer, Done, Flow, Goto, Invalid, Next, Outcome, Step
from handlers.flows import pic
from handlers.flows.worker import greeting, phone_of, worker_menu
from handlers.staffing import names_of, quote, tell_answer, tell_closed, tell_new_question
from handlers.types import Option, Reply
from storage import admins, tickets, worker_side
from storage.audit import Actor
from storage.models import Opd, Worker
from storage.tickets import Scope, TicketView

#: Open questions offered as buttons in a list (the count covers all of them).
LIST_SHOWN = 8
#: Characters of a question on a list button.
LABEL_QUOTE = 32
#: OPDs named on the administrator's screen (the digest and `sertakan admin unstaffed` list all).
ADMIN_OPDS_SHOWN = 15


@dataclasses.dataclass(frozen=True, slots=True)
class Asker:
    """As whom the person asks, and the OPD the question goes to."""

    role: AskerRole
    opd_id: int
    opd_name: str
    worker_id: int | None


async def asker_of(ctx: Context) -> Asker | None:
    """A registered ASN (their OPD), else a worker on WhatsApp (the OPD of their
    newest open enrollment, else their newest), else None: nobody to ask for."""
    asn = await ctx.asn()
    if asn is not None:
        return Asker(AskerRole.ASN, asn.opd_id, asn.opd_name, None)
    phone = phone_of(ctx)
    if phone is None:
        return None
    records = await worker_side.records_for_phone(ctx.repo.session, phone)
    if not records:
        return None
    sponsorship = records[0]
    opd = await ctx.repo.session.get(Opd, sponsorship.opd_id)
    assert opd is not None
    return Asker(AskerRole.WORKER, opd.id, opd.name, sponsorship.worker_id)


async def _way_on(ctx: Context) -> list[Reply]:
    """The person's own menu: a worker's on WhatsApp, everyone else's main menu."""
    return await greeting(ctx) or [await menus.main_menu(ctx)]


def _is_worker(ctx: Context) -> bool:
    return ctx.state.data.get("_role") == AskerRole.WORKER.value


async def _asker_end(ctx: Context, replies: list[Reply]) -> Done:
    """End of the asker's flow: a worker gets the worker menu, an ASN the main menu."""
    if _is_worker(ctx):
        return Done([*replies, worker_menu(ctx)], show_menu=False)
    return Done(replies)


def _text_problem(ctx: Context) -> str:
    return ctx.t("ticket.error.text", min=tickets.MIN_TEXT, max=ctx.config.max_input_chars)


# -- asking --------------------------------------------------------------------------


class QuestionStep(Step):
    name = "question"
    help_key = "ticket.help.question"
    #: A typed "1" is (a poor) question, not the position of "Batal".
    numbers_are_values = True

    async def ask(self, ctx: Context) -> list[Reply]:
        t = ctx.t
        opd_id = int(str(ctx.state.data["_opd_id"]))
        opd = str(ctx.state.data["_opd_name"])
        staff = await admins.opd_staff(ctx.repo.connection, opd_id)
        if staff:
            names = names_of(staff)
            intro = (
                t("ticket.ask.to_pic", opd=opd, names=names)
                if names
                else t("ticket.ask.to_pic_unnamed", opd=opd)
            )
        elif await admins.administrators(ctx.repo.connection):
            intro = t("ticket.ask.to_admin", opd=opd)
        else:
            intro = t("ticket.ask.to_nobody", opd=opd)
        text = intro + "\n\n" + t("ticket.ask.type", max=ctx.config.max_input_chars)
        return [Reply(text, options=(ctx.option("cancel", t("ticket.cancel")),))]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        if answer.choice == "cancel":
            return await _asker_end(ctx, [Reply(ctx.t("ticket.ask.cancelled"))])
        text = tickets.clean_text(answer.text or "")
        if text is None:
            return Invalid(_text_problem(ctx))
        ctx.state.data["text"] = text
        return Next()


class ConfirmQuestionStep(Step):
    name = "confirm"
    help_key = "ticket.help.confirm"
    free_text = False

    async def ask(self, ctx: Context) -> list[Reply]:
        t = ctx.t
        text = t(
            "ticket.ask.confirm",
            opd=str(ctx.state.data["_opd_name"]),
            question=str(ctx.state.data["text"]),
        )
        return [
            Reply(
                text,
                options=(
                    ctx.option("send", t("ticket.send")),
                    ctx.option("edit", t("ticket.edit")),
                    ctx.option("cancel", t("ticket.cancel")),
                ),
            )
        ]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        t = ctx.t
        if answer.choice == "edit":
            return Goto(QuestionStep.name)
        if answer.choice != "send":
            return await _asker_end(ctx, [Reply(t("ticket.ask.cancelled"))])
        asker = await asker_of(ctx)
        if asker is None:
            return await _asker_end(ctx, [Reply(t("ticket.who_can_ask"))])
        text = str(ctx.state.data["text"])
        connection = ctx.repo.connection
        ticket_id = await tickets.open_ticket(
            connection,
            opd_id=asker.opd_id,
            asker_account_id=ctx.account.id,
            asker_role=asker.role,
            worker_id=asker.worker_id,
            text=text,
            actor=Actor.account(asker.role.value, ctx.account.id),
            now=ctx.now,
        )
        staff = await admins.opd_staff(connection, asker.opd_id)
        recipients = staff or await admins.administrators(connection)
        asker_name = await _asker_name(ctx, asker)
        await tell_new_question(
            connection,
            ctx.notices.catalogs,
            ticket_id=ticket_id,
            opd_name=asker.opd_name,
            asker=str(asker_name or "-"),
            text=text,
            recipients=recipients,
            now=ctx.now,
        )
        if staff:
            names = names_of(staff)
            sent = (
                t("ticket.sent.pic", number=ticket_id, opd=asker.opd_name, names=names)
                if names
                else t("ticket.sent.pic_unnamed", number=ticket_id, opd=asker.opd_name)
            )
        elif recipients:
            sent = t("ticket.sent.admin", number=ticket_id, opd=asker.opd_name)
        else:
            sent = t("ticket.sent.nobody", number=ticket_id, opd=asker.opd_name)
        return await _asker_end(ctx, [Reply(sent)])


async def _asker_name(ctx: Context, asker: Asker) -> str | None:
    if asker.role is AskerRole.ASN:
        asn = await ctx.asn()
        return asn.full_name if asn is not None else None
    if asker.worker_id is None:
        return None
    worker = await ctx.repo.session.get(Worker, asker.worker_id)
    return worker.full_name if worker is not None else None


class AskFlow(Flow):
    """ "Tanya PIC": type the question, check it, send it."""

    name = "ask"
    title_key = "flow.title.ask"
    steps = (QuestionStep(), ConfirmQuestionStep())

    async def leave(self, ctx: Context) -> Reply:
        # The asker's own menu: a worker's on WhatsApp, everyone else's main menu.
        return (await _way_on(ctx))[-1]

    async def can_start(self, ctx: Context) -> str | None:
        if await asker_of(ctx) is None:
            return ctx.t("ticket.who_can_ask")
        return None

    async def initial_data(self, ctx: Context) -> dict[str, object]:
        asker = await asker_of(ctx)
        assert asker is not None
        return {"_role": asker.role.value, "_opd_id": asker.opd_id, "_opd_name": asker.opd_name}


# -- answering -------------------------------------------------------------------------


async def admin_scope(ctx: Context) -> Scope | None:
    """The administrator's scope when this account is an administrator."""
    if await admins.admin_id_for_account(ctx.repo.connection, ctx.account.id) is None:
        return None
    return Scope.admin(ctx.account.id)


async def pic_scope(ctx: Context) -> Scope | None:
    role = await ctx.pic()
    if role is None:
        return None
    return Scope.pic(role.pic_id, role.opd_id, ctx.account.id)


async def find(ctx: Context, ticket_id: int) -> tuple[TicketView, Scope] | None:
    """The question with the scope that may see it: the person's PIC role first."""
    for scope in (await pic_scope(ctx), await admin_scope(ctx)):
        if scope is None:
            continue
        view = await tickets.get(ctx.repo.connection, ticket_id, scope)
        if view is not None:
            return view, scope
    return None


def _list_option(ctx: Context, scope: Scope) -> Option:
    """Back to the list of open questions of `scope`."""
    action = actions.AdminTickets() if scope.opd_id is None else actions.PicTickets()
    return action.option(ctx.t("ticket.back_to_list"))


def _home(ctx: Context, scope: Scope) -> Option:
    if scope.opd_id is None:
        return actions.AdminHome().option(ctx.t("admin.menu.home"))
    return actions.PicHome().option(ctx.t("pic.menu.home"))


async def ticket_list(ctx: Context, scope: Scope) -> list[Reply]:
    """The open questions `scope` answers, oldest first, each a button."""
    t = ctx.t
    lines, total = await tickets.open_tickets(ctx.repo.connection, scope, limit=LIST_SHOWN)
    back = (_home(ctx, scope), actions.Menu().option(t("menu.back_to_menu")))
    if not total:
        return [Reply(t("ticket.list.empty"), options=back)]
    text = t("ticket.list.title", count=total)
    if total > len(lines):
        text += "\n" + t("ticket.list.more", shown=len(lines))
    options = tuple(
        actions.TicketShow(line.id).option(
            t(
                "ticket.list.item",
                number=line.id,
                asker=line.asker_name,
                question=quote(line.question.replace("\n", " "), LABEL_QUOTE),
            ),
        )
        for line in lines
    )
    return [Reply(text, options=(*options, *back))]


def _thread(ctx: Context, view: TicketView) -> str:
    t = ctx.t
    lines = [
        t(
            "ticket.view.header",
            number=view.id,
            asker=view.asker_name,
            role=t(f"ticket.role.{view.asker_role.value}"),
            opd=view.opd_name,
        )
    ]
    for message in view.messages:
        moment = message.created_at.astimezone(ctx.config.timezone)
        when = f"{t.date(moment.date())} {moment:%H:%M}"
        lines.append(t(f"ticket.view.{message.author.value}", when=when, text=message.body))
    return "\n\n".join(lines)


async def show(ctx: Context, ticket_id: int) -> list[Reply]:
    """One question with its thread and what can be done with it."""
    t = ctx.t
    found = await find(ctx, ticket_id)
    if found is None:
        return [Reply(t("ticket.not_found")), *await _fallback_list(ctx)]
    view, scope = found
    text = _thread(ctx, view)
    if view.status is not TicketStatus.OPEN:
        text += "\n\n" + t("ticket.view.closed")
        return [
            Reply(
                text,
                options=(
                    _list_option(ctx, scope),
                    _home(ctx, scope),
                ),
            )
        ]
    return [
        Reply(
            text,
            options=(
                actions.TicketAnswer(view.id).option(t("ticket.answer")),
                actions.TicketClose(view.id).option(t("ticket.close")),
                _list_option(ctx, scope),
            ),
        )
    ]


async def _fallback_list(ctx: Context) -> list[Reply]:
    """After a question that cannot be shown: the list the person has, or the menu."""
    scope = await pic_scope(ctx) or await admin_scope(ctx)
    if scope is None:
        return await _way_on(ctx)
    return await ticket_list(ctx, scope)


async def close(ctx: Context, ticket_id: int) -> list[Reply]:
    """Close a question (audited); the asker is told."""
    t = ctx.t
    found = await find(ctx, ticket_id)
    if found is None:
        return [Reply(t("ticket.not_found")), *await _fallback_list(ctx)]
    view, scope = found
    if not await tickets.close(ctx.repo.connection, view.id, scope, now=ctx.now):
        return [Reply(t("ticket.not_open", number=view.id)), *await ticket_list(ctx, scope)]
    await tell_closed(
        ctx.repo.connection,
        ctx.notices.catalogs,
        ticket_id=view.id,
        asker_account_id=view.asker_account_id,
        opd_name=view.opd_name,
        question=view.question,
        now=ctx.now,
    )
    return [Reply(t("ticket.closed", number=view.id)), *await ticket_list(ctx, scope)]


async def _answer_scope(ctx: Context) -> Scope | None:
    if ctx.state.data.get("_as_admin"):
        return await admin_scope(ctx)
    return await pic_scope(ctx)


async def _answer_view(ctx: Context) -> TicketView | None:
    scope = await _answer_scope(ctx)
    if scope is None:
        return None
    return await tickets.get(ctx.repo.connection, int(str(ctx.state.data["_tid"])), scope)


async def _answer_end(ctx: Context, notice: str) -> Done:
    scope = await _answer_scope(ctx)
    if scope is None:
        return Done([Reply(notice)])
    return Done([Reply(notice), *await ticket_list(ctx, scope)], show_menu=False)


class AnswerTextStep(Step):
    name = "answer"
    help_key = "ticket.help.answer"
    numbers_are_values = True

    async def ask(self, ctx: Context) -> list[Reply]:
        t = ctx.t
        view = await _answer_view(ctx)
        thread = _thread(ctx, view) if view is not None else ""
        text = thread + "\n\n" + t("ticket.answer.type", max=ctx.config.max_input_chars)
        return [Reply(text.strip(), options=(ctx.option("cancel", t("ticket.cancel")),))]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        if answer.choice == "cancel":
            return await _answer_end(ctx, ctx.t("ticket.answer.cancelled"))
        text = tickets.clean_text(answer.text or "")
        if text is None:
            return Invalid(_text_problem(ctx))
        ctx.state.data["text"] = text
        return Next()


class AnswerConfirmStep(Step):
    name = "confirm"
    help_key = "ticket.help.answer_confirm"
    free_text = False

    async def ask(self, ctx: Context) -> list[Reply]:
        t = ctx.t
        view = await _answer_view(ctx)
        text = t(
            "ticket.answer.confirm",
            asker=view.asker_name if view is not None else "-",
            answer=str(ctx.state.data["text"]),
        )
        return [
            Reply(
                text,
                options=(
                    ctx.option("send", t("ticket.answer.send")),
                    ctx.option("send_close", t("ticket.answer.send_close")),
                    ctx.option("edit", t("ticket.edit")),
                    ctx.option("cancel", t("ticket.cancel")),
                ),
            )
        ]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        t = ctx.t
        if answer.choice == "edit":
            return Goto(AnswerTextStep.name)
        if answer.choice not in ("send", "send_close"):
            return await _answer_end(ctx, t("ticket.answer.cancelled"))
        scope = await _answer_scope(ctx)
        view = await _answer_view(ctx)
        if scope is None or view is None:
            return Done([Reply(t("ticket.not_found"))])
        text = str(ctx.state.data["text"])
        closing = answer.choice == "send_close"
        message_id = await tickets.answer(
            ctx.repo.connection, view.id, scope, text, close=closing, now=ctx.now
        )
        if message_id is None:
            return await _answer_end(ctx, t("ticket.not_open", number=view.id))
        await tell_answer(
            ctx.repo.connection,
            ctx.notices.catalogs,
            asker_account_id=view.asker_account_id,
            message_id=message_id,
            author=scope.author,
            opd_name=view.opd_name,
            question=view.question,
            text=text,
            closed=closing,
            now=ctx.now,
        )
        key = "ticket.answer.sent_closed" if closing else "ticket.answer.sent"
        return await _answer_end(ctx, t(key, number=view.id, asker=view.asker_name))


class AnswerFlow(Flow):
    """The PIC's (or administrator's) answer to one question: type, check, send."""

    name = "ticket_answer"
    title_key = "flow.title.ticket_answer"
    steps = (AnswerTextStep(), AnswerConfirmStep())

    async def leave(self, ctx: Context) -> Reply:
        # The open questions the PIC or administrator answers (or their menu).
        return (await _fallback_list(ctx))[-1]


async def answer_data(ctx: Context, ticket_id: int) -> dict[str, object] | list[Reply]:
    """The answer flow's starting data for an open question the person may answer,
    or the replies saying why not."""
    found = await find(ctx, ticket_id)
    if found is None:
        return [Reply(ctx.t("ticket.not_found")), *await _fallback_list(ctx)]
    view, scope = found
    if view.status is not TicketStatus.OPEN:
        return [Reply(ctx.t("ticket.not_open", number=view.id)), *await ticket_list(ctx, scope)]
    return {"_tid": view.id, "_as_admin": scope.opd_id is None}


# -- the administrator's chat menu -----------------------------------------------------


async def admin_home(ctx: Context) -> list[Reply]:
    """OPDs with work waiting and no PIC, and the questions waiting for an administrator."""
    t = ctx.t
    scope = await admin_scope(ctx)
    if scope is None:
        return [Reply(t("admin.only")), *await _way_on(ctx)]
    unstaffed = await admins.unstaffed_opds(ctx.repo.connection)
    _, questions = await tickets.open_tickets(ctx.repo.connection, scope, limit=0)
    lines = [t("admin.home.title")]
    if unstaffed:
        lines.append(t("admin.home.unstaffed", count=len(unstaffed)))
        for opd in unstaffed[:ADMIN_OPDS_SHOWN]:
            lines.append(
                t(
                    "admin.home.opd",
                    opd=opd.name,
                    code=opd.code,
                    waiting=opd.waiting,
                    questions=opd.open_questions,
                )
            )
        if len(unstaffed) > ADMIN_OPDS_SHOWN:
            lines.append(t("admin.home.more", count=len(unstaffed) - ADMIN_OPDS_SHOWN))
        lines.append(t("admin.home.how"))
    else:
        lines.append(t("admin.home.all_staffed"))
    options = (
        actions.AdminTickets().option(t("admin.menu.questions", count=questions)),
        actions.Menu().option(t("menu.back_to_menu")),
    )
    return [Reply("\n".join(lines), options=options)]


async def pic_list(ctx: Context) -> list[Reply]:
    """The open questions of the PIC's OPD (behind `Guard.PIC`)."""
    scope = await pic_scope(ctx)
    if scope is None:
        return [pic.not_a_pic(ctx), *await _way_on(ctx)]
    return await ticket_list(ctx, scope)


async def admin_list(ctx: Context) -> list[Reply]:
    """The questions waiting for an administrator (behind `Guard.ADMIN`)."""
    scope = await admin_scope(ctx)
    if scope is None:
        return [Reply(ctx.t("admin.only")), *await _way_on(ctx)]
    return await ticket_list(ctx, scope)


async def not_found(ctx: Context) -> list[Reply]:
    """What a button naming no question the person may see says, with the way on."""
    return [Reply(ctx.t("ticket.not_found")), *await _fallback_list(ctx)]
