"""The building blocks of a conversation: steps, flows and what a step decides.

A flow is an ordered list of steps. The engine asks a step's question, turns the
person's next event into an `Answer`, and lets the step decide an `Outcome`:
stay with a specific complaint (`Invalid`), move on (`Next` / `Goto`), or end
(`Done`). Steps never send anything themselves and never commit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from handlers.types import EventKind, Option, Reply

if TYPE_CHECKING:
    from handlers.context import Context


@dataclasses.dataclass(slots=True, frozen=True)
class Answer:
    """The person's input for the current question, normalised by the engine."""

    kind: EventKind
    #: Typed text, stripped (None for a pressed button or a shared contact).
    text: str | None = None
    #: The key of the current question's option that was pressed or typed.
    choice: str | None = None
    contact_phone: str | None = None
    contact_is_own: bool = False
    #: A photo or document sent to a step that accepts files (`Step.accepts_files`).
    file_ref: str | None = None


@dataclasses.dataclass(slots=True, frozen=True)
class Invalid:
    """The answer is not acceptable: say why, then ask the same question again."""

    message: str


@dataclasses.dataclass(slots=True, frozen=True)
class Next:
    """Accepted: go to the flow's next step (or back to the summary when editing)."""

    notice: str | None = None


@dataclasses.dataclass(slots=True, frozen=True)
class Goto:
    """Accepted: go to a named step of the same flow."""

    step: str
    notice: str | None = None
    #: True from a step that only offers ways out (a refusal): "kembali" from `step`
    #: then goes where it would have gone before `step`'s last visit, never back
    #: to the refusal (whose question may no longer make sense).
    rewind: bool = False


@dataclasses.dataclass(slots=True, frozen=True)
class Done:
    """The flow ends: send these replies, then the main menu unless told otherwise."""

    replies: Sequence[Reply]
    show_menu: bool = True
    #: Catalogue key of what a button of this flow's questions, pressed after the end,
    #: says instead of the generic "stale button" (an enrollment "was already sent").
    sent_key: str | None = None


Outcome = Invalid | Next | Goto | Done


class Step:
    """One question of a flow. Subclasses set `name` and `help_key` and implement both methods."""

    name: ClassVar[str]
    help_key: ClassVar[str]
    #: False when only the offered options are valid answers (text must match one).
    free_text: ClassVar[bool] = True
    #: True when a photo or document is an answer (a receipt); otherwise it is refused.
    accepts_files: ClassVar[bool] = False
    #: True when a typed number is a value (a count of months), not an option's position.
    numbers_are_values: ClassVar[bool] = False

    def applies(self, ctx: Context) -> bool:
        """False to skip this step (e.g. the payroll statement for other plans)."""
        return True

    async def ask(self, ctx: Context) -> list[Reply]:
        """The question (the last reply carries its options); deterministic from the state."""
        raise NotImplementedError

    async def options(self, ctx: Context) -> tuple[Option, ...] | None:
        """The question's options without its text, for a step whose text costs much to
        render (the engine needs only the options to read an answer, and the text only
        when it asks again). The same options `ask` offers; None (the default): the
        engine renders `ask` to learn them."""
        return None

    async def handle(self, ctx: Context, answer: Answer) -> Outcome:
        """Decide what the answer means."""
        raise NotImplementedError


class Flow:
    """An ordered set of steps with a name stored in the conversation row."""

    name: ClassVar[str]
    #: Catalogue key of the flow's title ("continue: <title>").
    title_key: ClassVar[str]
    steps: tuple[Step, ...]

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        # A flow (a class with a name) that does not say where it leaves cannot be written.
        if "name" in cls.__dict__ and cls.leave is Flow.leave:
            raise TypeError(f"flow {cls.__name__} does not declare where it leaves (Flow.leave)")

    def __init__(self) -> None:
        self._by_name = {step.name: step for step in self.steps}

    @property
    def first(self) -> str:
        return self.steps[0].name

    def step(self, name: str) -> Step:
        return self._by_name[name]

    def has_step(self, name: str) -> bool:
        return name in self._by_name

    def after(self, name: str, ctx: Context) -> str | None:
        """The next applicable step after `name`, or None at the end."""
        names = [s.name for s in self.steps]
        for step in self.steps[names.index(name) + 1 :]:
            if step.applies(ctx):
                return step.name
        return None

    async def can_start(self, ctx: Context) -> str | None:
        """A message explaining why the flow cannot start now, or None."""
        return None

    async def initial_data(self, ctx: Context) -> dict[str, object]:
        return {}

    async def leave(self, ctx: Context) -> Reply:
        """The screen, with options, the person lands on when this flow ends, empties,
        fails or cannot start. Every flow declares it (a flow class without it fails
        where it is defined); the engine shows it after every end whose last reply
        offers no options and after a refusal to start, so no end of a flow leaves the
        person without a way on."""
        raise NotImplementedError
