"""Shared by several flows: the name step, "which field to edit", "which worker", the
occupation's label."""

from __future__ import annotations

from typing import ClassVar

from domain.vocabulary import Occupation
from handlers.context import Context
from handlers.flow import Answer, Goto, Invalid, Next, Outcome, Step
from handlers.i18n import Translator
from handlers.parsing import TextProblem, parse_person_name, record_id
from handlers.types import Reply


def work_label(t: Translator, occupation: object, typed: object) -> str:
    """What the worker does, for people: the typed occupation after "other", else its word.

    `occupation` is an `Occupation` or its value (None for a family member
    enrolled before occupations were asked: "not given yet").
    """
    if occupation is None or occupation == Occupation.FAMILY_MEMBER.value:
        return t("occupation.unknown")
    value = Occupation(str(occupation))
    if value is Occupation.OTHER and typed:
        return str(typed)
    return t(f"occupation.{value.value}")


class PersonNameStep(Step):
    """A full name into data["full_name"]; subclasses name the question."""

    name = "name"
    ask_key: ClassVar[str]

    async def ask(self, ctx: Context) -> list[Reply]:
        return [Reply(ctx.t(self.ask_key))]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        name = parse_person_name(answer.text or "")
        if isinstance(name, TextProblem):
            return Invalid(ctx.t(f"name.error.{name.value}"))
        ctx.state.data["full_name"] = name
        return Next()


class EditFieldStep(Step):
    """From the summary: pick the answer to change; that step then returns to the summary."""

    name = "edit"
    help_key = "summary.help.edit"
    free_text = False
    #: Step names that can be edited, in display order; labels are "<label_prefix>.<step>".
    fields: ClassVar[tuple[str, ...]]
    label_prefix: ClassVar[str]

    def editable(self, ctx: Context) -> tuple[str, ...]:
        return self.fields

    async def ask(self, ctx: Context) -> list[Reply]:
        options = tuple(
            ctx.option(field, ctx.t(f"{self.label_prefix}.{field}")) for field in self.editable(ctx)
        )
        return [Reply(ctx.t("summary.which_field"), options=options)]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        field = answer.choice or ""
        if field not in self.editable(ctx):
            return Invalid(ctx.t("input.choose_option"))
        ctx.state.data["_editing"] = True
        return Goto(field)


class WhichSponsorshipStep(Step):
    """Which of the ASN's workers a flow is about, when there are several (stop sponsoring,
    change the plan): one option per sponsorship `choices` lists, into data["sid"].

    A flow with one candidate starts with data["sid"] set and skips this step.
    Subclasses set the texts (`prompt_key`, `help_key`) and the candidates.
    """

    name = "which"
    free_text = False
    #: Catalogue key of the question.
    prompt_key: ClassVar[str]

    async def choices(self, ctx: Context) -> list[tuple[int, str]]:
        """The candidates: (sponsorship id, option label), in the order shown."""
        raise NotImplementedError

    def applies(self, ctx: Context) -> bool:
        return "sid" not in ctx.state.data

    async def ask(self, ctx: Context) -> list[Reply]:
        options = tuple(ctx.option(str(sid), label) for sid, label in await self.choices(ctx))
        return [Reply(ctx.t(self.prompt_key), options=options)]

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        chosen = record_id(answer.choice or "")
        if chosen is None or chosen not in {sid for sid, _ in await self.choices(ctx)}:
            return Invalid(ctx.t(self.help_key))
        ctx.state.data["sid"] = chosen
        return Next()
