"""PRODUCT 4.1: ASN registration, once: consent, NIP, name, OPD, phone, summary."""

from __future__ import annotations

from datetime import date

from sqlalchemy.exc import IntegrityError

from domain.nip import NipError, parse_nip
from domain.phone import PhoneError, display_phone, parse_mobile
from domain.vocabulary import (
    ConsentPurpose,
    ConsentSubject,
    EmploymentType,
    Sex,
)
from handlers import menus
from handlers.context import Context
from handlers.flow import Answer, Done, Flow, Goto, Invalid, Next, Outcome, Step
from handlers.flows.common import EditFieldStep, PersonNameStep
from handlers.parsing import record_id
from handlers.types import Reply
from storage.models import Asn

#: Bump when the privacy notice text changes; stored with every consent.
PRIVACY_NOTICE_VERSION = "privacy-2026-12"


class ConsentStep(Step):
    name = "consent"
    help_key = "registration.help.consent"
    free_text = False

    async def ask(self, ctx: Context) -> list[Reply]:
        return [
            Reply(
                ctx.t("registration.privacy_notice", version=PRIVACY_NOTICE_VERSION),
                options=(
                    ctx.option("agree", ctx.t("registration.consent.agree")),
                    ctx.option("decline", ctx.t("registration.consent.decline")),
                ),
            )
        ]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        granted = answer.choice == "agree"
        record = await ctx.repo.consents.record(
            subject=ConsentSubject.ASN,
            subject_id=None,
            purpose=ConsentPurpose.PRIVACY_NOTICE,
            text_version=PRIVACY_NOTICE_VERSION,
            granted=granted,
            channel=ctx.event.channel,
            channel_account_id=ctx.account.id,
            recorded_at=ctx.now,
        )
        if not granted:
            return Done([Reply(ctx.t("registration.declined"))])
        ctx.state.data["consent_id"] = record.id
        return Next()


class NipStep(Step):
    name = "nip"
    help_key = "registration.help.nip"

    async def ask(self, ctx: Context) -> list[Reply]:
        return [Reply(ctx.t("registration.ask_nip"))]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        parsed = parse_nip(answer.text or "")
        if isinstance(parsed, NipError):
            return Invalid(ctx.t(f"nip.error.{parsed.problem.value}", length=parsed.length))
        existing = await ctx.repo.asns.by_nip(parsed.value)
        if existing is not None and existing.channel_account_id != ctx.account.id:
            return Invalid(ctx.t("registration.nip_taken"))
        data = ctx.state.data
        data.update(
            nip=parsed.value,
            nip_type=parsed.employment_type.value,
            birth_date=parsed.birth_date.isoformat(),
            sex=parsed.sex.value,
        )
        notice = ctx.t(
            "registration.nip_ok",
            type=ctx.t(f"employment.{parsed.employment_type.value}"),
            birth=ctx.t.date(parsed.birth_date),
        )
        return Next(notice=notice)


class NameStep(PersonNameStep):
    help_key = "registration.help.name"
    ask_key = "registration.ask_name"


class OpdStep(Step):
    """Search by typed words; results (or closest matches) come back as options."""

    name = "opd"
    help_key = "registration.help.opd"

    async def ask(self, ctx: Context) -> list[Reply]:
        query = ctx.state.data.get("opd_query")
        if not query:
            return [Reply(ctx.t("registration.ask_opd"))]
        found = await ctx.repo.opds.search(str(query))
        if found:
            options = tuple(ctx.option(f"opd{opd.id}", opd.name) for opd in found)
            return [Reply(ctx.t("registration.opd_pick", query=query), options=options)]
        closest = await ctx.repo.opds.closest(str(query))
        if closest:
            options = tuple(ctx.option(f"opd{opd.id}", opd.name) for opd in closest)
            return [Reply(ctx.t("registration.opd_suggest", query=query), options=options)]
        return [Reply(ctx.t("registration.opd_not_found", query=query))]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        choice = answer.choice or ""
        opd_id = record_id(choice.removeprefix("opd")) if choice.startswith("opd") else None
        if opd_id is not None:
            opd = await ctx.repo.opds.get(opd_id)
            if opd is None or not opd.active:
                return Invalid(ctx.t("registration.opd_gone"))
            ctx.state.data.update(opd_id=opd.id, opd_name=opd.name)
            ctx.state.data.pop("opd_query", None)
            return Next()
        text = (answer.text or "").strip()
        if len(text) < 3:
            return Invalid(ctx.t("registration.opd_query_short"))
        ctx.state.data["opd_query"] = text
        return Goto(self.name)


class PhoneStep(Step):
    """Telegram: the share-contact button; console: typed. WhatsApp uses the sender's number.

    Skipped when the channel vouches for the sender's number (`event.sender_phone`:
    WhatsApp's wa_id); a WhatsApp user known only by a business-scoped id types it.
    """

    name = "phone"
    help_key = "registration.help.phone"

    def applies(self, ctx: Context) -> bool:
        return ctx.event.sender_phone is None

    async def ask(self, ctx: Context) -> list[Reply]:
        return [Reply(ctx.t("registration.ask_phone"), request_contact=True)]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        if answer.contact_phone is not None and not answer.contact_is_own:
            return Invalid(ctx.t("registration.phone_not_own"))
        parsed = parse_mobile(answer.contact_phone or answer.text or "")
        if isinstance(parsed, PhoneError):
            return Invalid(ctx.t(f"phone.error.{parsed.problem.value}"))
        ctx.state.data["phone"] = parsed.e164
        return Next()


FIELDS = ("nip", "name", "opd", "phone")


class SummaryStep(Step):
    name = "summary"
    help_key = "registration.help.summary"
    free_text = False

    async def ask(self, ctx: Context) -> list[Reply]:
        data = ctx.state.data
        text = ctx.t(
            "registration.summary",
            nip=data.get("nip", "-"),
            type=ctx.t(f"employment.{data.get('nip_type', 'pns')}"),
            name=data.get("full_name", "-"),
            opd=data.get("opd_name", "-"),
            phone=display_phone(phone)
            if (phone := data.get("phone") or ctx.event.sender_phone)
            else ctx.t("registration.phone_from_whatsapp"),
        )
        return [
            Reply(
                text,
                options=(
                    ctx.option("confirm", ctx.t("summary.confirm")),
                    ctx.option("edit", ctx.t("summary.edit")),
                ),
            )
        ]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        if answer.choice == "edit":
            return Goto(EditStep.name)
        data = ctx.state.data
        if await ctx.asn() is not None:
            return Done([Reply(ctx.t("registration.already_registered"))])
        existing = await ctx.repo.asns.by_nip(str(data["nip"]))
        if existing is not None:
            return Invalid(ctx.t("registration.nip_taken"))
        phone = data.get("phone") or ctx.event.sender_phone
        asn = Asn(
            nip=str(data["nip"]),
            employment_type=EmploymentType(str(data["nip_type"])),
            full_name=str(data["full_name"]),
            birth_date=date.fromisoformat(str(data["birth_date"])),
            sex=Sex(str(data["sex"])),
            opd_id=int(data["opd_id"]),
            phone_e164=str(phone),
            channel_account_id=ctx.account.id,
            registered_at=ctx.now,
        )
        try:
            async with ctx.repo.session.begin_nested():
                await ctx.repo.asns.add(asn)
        except IntegrityError:
            # Another account registered the same NIP a moment ago.
            return Invalid(ctx.t("registration.nip_taken"))
        consent = await ctx.repo.consents.get(int(data["consent_id"]))
        if consent is not None:
            consent.subject_id = asn.id
        ctx.forget_asn()
        return Done([Reply(ctx.t("registration.done", name=asn.full_name))])


class EditStep(EditFieldStep):
    fields = FIELDS
    label_prefix = "registration.field"

    def editable(self, ctx: Context) -> tuple[str, ...]:
        # WhatsApp takes the phone from the sender: there is nothing to edit.
        return tuple(f for f in FIELDS if f != "phone" or PhoneStep().applies(ctx))

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        if answer.choice == "opd":
            ctx.state.data.pop("opd_query", None)  # ask afresh instead of old results
        return await super().handle(ctx, answer)


class RegistrationFlow(Flow):
    name = "registration"
    title_key = "flow.title.registration"
    steps = (
        ConsentStep(),
        NipStep(),
        NameStep(),
        OpdStep(),
        PhoneStep(),
        SummaryStep(),
        EditStep(),
    )

    async def leave(self, ctx: Context) -> Reply:
        return await menus.main_menu(ctx)

    async def can_start(self, ctx: Context) -> str | None:
        if await ctx.asn() is not None:
            return ctx.t("registration.already_registered")
        return None
