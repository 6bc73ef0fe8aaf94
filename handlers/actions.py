"""Typed actions: what a menu button, a typed command or a word asks the bot to do.

Every action a person can take outside a flow's own question is one small frozen
class here (like aiogram's `CallbackData`): a `prefix`, typed fields, `pack()` to
the payload a button carries and `unpack()` that validates a payload and gives
None for a malformed or forged one ("consent:yes:²", a 20-digit id, a month 13).
Each class also declares its `guard`: who may use it. The engine
(`handlers.engine`) registers one handler per class and checks the guard once,
before the handler runs; an action class without a handler fails at import.

Wire format (unchanged since the first release, so buttons sent to people's
chats long ago are still understood): `g:<prefix>[:<field>...]` for actions
valid at any time, and `consent:<yes|no>[:<id>]` for the WhatsApp consent
template's quick replies, whose payload Meta stores with the approved template
(`sertakan_data/whatsapp_templates.json`). A payload is at most
`MAX_OPTION_ID_BYTES` bytes (Telegram's callback_data holds 64, WhatsApp's ids
far more); `pack()` refuses a longer one.

Field types a payload can carry: `int` (a record id, 1 to `MAX_RECORD_ID`),
`Count` (0 to `MAX_RECORD_ID`), `date` (a month, "2026-12"), a `StrEnum`, a
`Literal` of words, `str` (a name of lower-case letters and "_"), each
optionally `| None` with a default of None (left out at the end of the payload).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from datetime import date
from enum import StrEnum
from typing import Any, ClassVar, Literal, NewType, Self

from domain.vocabulary import Language
from handlers.parsing import MAX_RECORD_ID, ascii_int, record_id
from handlers.types import MAX_OPTION_ID_BYTES, Option

#: Payloads of actions valid at any time start with this (menus, list items).
GLOBAL_PREFIX = "g:"
#: A count carried by a payload (how many people a PIC was shown): 0 and up.
Count = NewType("Count", int)
#: The info pages (`handlers.menus.info`).
InfoTopic = Literal["dues", "where", "benefits", "how"]

_MONTH = re.compile(r"^(\d{4})-(\d{2})$", re.ASCII)
_NAME = re.compile(r"^[a-z_]{1,32}$", re.ASCII)
_SEPARATOR = ":"


class Guard(StrEnum):
    """Who may use an action; the engine refuses everybody else with one message each."""

    ANYONE = "anyone"
    #: A registered ASN.
    ASN = "asn"
    #: A PIC with an appointment in force (the OPD always comes from the appointment).
    PIC = "pic"
    #: A PIC or an administrator (questions: each sees the ones of their scope).
    STAFF = "staff"
    ADMIN = "admin"
    #: Someone whose own number WhatsApp vouches for: a worker, or who might be one.
    WORKER = "worker"


_REGISTRY: dict[tuple[str, str], type[Action]] = {}


class Action:
    """Base of every action; subclasses are frozen dataclasses with a `prefix` and a `guard`."""

    prefix: ClassVar[str]
    guard: ClassVar[Guard] = Guard.ANYONE
    #: What the payload starts with before the prefix (`GLOBAL_PREFIX`, or "" for consent).
    namespace: ClassVar[str] = GLOBAL_PREFIX

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        key = (cls.namespace, cls.prefix)
        if key in _REGISTRY:
            raise TypeError(f"two actions with the payload prefix {cls.namespace}{cls.prefix}")
        if not _NAME.match(cls.prefix):
            raise TypeError(f"action prefix {cls.prefix!r} is not a lower-case name")
        _REGISTRY[key] = cls

    def pack(self) -> str:
        """The payload a button carries; ValueError when it would not fit a button."""
        parts = [self.namespace + self.prefix]
        values = [_pack_value(getattr(self, field.name)) for field in _fields(type(self))]
        while values and values[-1] is None:
            values.pop()  # optional fields at the end are left out
        for value in values:
            if value is None:
                raise ValueError(f"{type(self).__name__}: only trailing fields may be empty")
            parts.append(value)
        payload = _SEPARATOR.join(parts)
        if len(payload.encode("utf-8")) > MAX_OPTION_ID_BYTES:
            raise ValueError(f"payload {payload!r} is longer than {MAX_OPTION_ID_BYTES} bytes")
        return payload

    @classmethod
    def unpack(cls, payload: str) -> Self | None:
        """The action `payload` carries, or None when it is not a valid payload of this class."""
        head = cls.namespace + cls.prefix
        if payload == head:
            values: list[str] = []
        elif payload.startswith(head + _SEPARATOR):
            values = payload[len(head) + 1 :].split(_SEPARATOR)
        else:
            return None
        fields = _fields(cls)
        if len(values) > len(fields):
            return None
        kwargs: dict[str, object] = {}
        hints = _hints(cls)
        for index, field in enumerate(fields):
            kind, optional = _kind(hints[field.name])
            if index >= len(values):
                if not optional:
                    return None
                kwargs[field.name] = None
                continue
            value = _unpack_value(kind, values[index])
            if value is None:
                return None
            kwargs[field.name] = value
        return cls(**kwargs)

    def option(self, label: str) -> Option:
        """A button (or numbered line) with `label` that asks for this action."""
        return Option(id=self.pack(), label=label)


def lookup(payload: str) -> type[Action] | None:
    """The action class a payload names by its prefix (valid or not), or None."""
    namespace = GLOBAL_PREFIX if payload.startswith(GLOBAL_PREFIX) else ""
    prefix = payload[len(namespace) :].split(_SEPARATOR, 1)[0]
    return _REGISTRY.get((namespace, prefix))


def parse(payload: str) -> Action | None:
    """The action a payload carries, or None (unknown prefix, malformed or forged)."""
    kind = lookup(payload)
    return None if kind is None else kind.unpack(payload)


def every_action() -> tuple[type[Action], ...]:
    """Every action class, in the order they are defined."""
    return tuple(_REGISTRY.values())


# -- packing values --------------------------------------------------------------------


def _fields(cls: type[Action]) -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(cls)  # type: ignore[arg-type]


def _hints(cls: type[Action]) -> dict[str, Any]:
    return typing.get_type_hints(cls, globalns=globals())


def _kind(hint: Any) -> tuple[Any, bool]:
    """(the field's value type, whether it may be None)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported action field type {hint!r}")
        return args[0], True
    return hint, False


def _pack_value(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, date):
        return f"{value:%Y-%m}"
    if isinstance(value, StrEnum):
        return value.value
    return str(value)


def _unpack_value(kind: Any, text: str) -> object | None:
    if kind is int:
        return record_id(text)
    if kind is Count:
        number = ascii_int(text, max_digits=len(str(MAX_RECORD_ID)))
        return number if number is not None and number <= MAX_RECORD_ID else None
    if kind is date:
        found = _MONTH.match(text)
        if found is None or not 1 <= int(found.group(2)) <= 12:
            return None
        return date(int(found.group(1)), int(found.group(2)), 1)
    if typing.get_origin(kind) is Literal:
        return text if text in typing.get_args(kind) else None
    if isinstance(kind, type) and issubclass(kind, StrEnum):
        return kind(text) if text in {member.value for member in kind} else None
    if kind is str:
        return text if _NAME.match(text) else None
    raise TypeError(f"unsupported action field type {kind!r}")


def _check(cls: type[Action]) -> None:
    """Fail at import for a field type `unpack` cannot read or a required field after
    an optional one (the payload could not tell them apart)."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__name__} must be a frozen dataclass")
    optional_seen = False
    for field in _fields(cls):
        kind, optional = _kind(_hints(cls)[field.name])
        if optional_seen and not optional:
            raise TypeError(f"{cls.__name__}.{field.name}: a required field after an optional one")
        optional_seen = optional_seen or optional
        _unpack_value(kind, "x")  # raises TypeError for a type it cannot read


# -- everybody -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Start(Action):
    """/start, "mulai": the welcome and the main menu (a running flow is kept as a draft)."""

    prefix = "start"


@dataclasses.dataclass(frozen=True)
class Menu(Action):
    """The main menu (a running flow is kept as a draft)."""

    prefix = "menu"


@dataclasses.dataclass(frozen=True)
class Cancel(Action):
    """ "batal": leave the running flow; answers given are kept as a draft."""

    prefix = "cancel"


@dataclasses.dataclass(frozen=True)
class Discard(Action):
    """Throw the draft away."""

    prefix = "discard"


@dataclasses.dataclass(frozen=True)
class Help(Action):
    """ "bantuan": help on the current question, or the general help."""

    prefix = "help"


@dataclasses.dataclass(frozen=True)
class HelpMenu(Action):
    """The menu's help entry: the general help (the running flow is kept as a draft)."""

    prefix = "helpmenu"


@dataclasses.dataclass(frozen=True)
class Back(Action):
    """ "kembali": the previous question of the running flow."""

    prefix = "back"


@dataclasses.dataclass(frozen=True)
class Resume(Action):
    """Continue the draft."""

    prefix = "resume"


@dataclasses.dataclass(frozen=True)
class Fresh(Action):
    """Start flow `flow` again, throwing its draft away."""

    prefix = "fresh"
    flow: str


@dataclasses.dataclass(frozen=True)
class Info(Action):
    """The info menu, or one of its pages."""

    prefix = "info"
    topic: InfoTopic | None = None


@dataclasses.dataclass(frozen=True)
class ChooseLanguage(Action):
    """The language menu, or switching to `language`."""

    prefix = "language"
    language: Language | None = None


@dataclasses.dataclass(frozen=True)
class Register(Action):
    """Register as an ASN."""

    prefix = "register"


@dataclasses.dataclass(frozen=True)
class Enroll(Action):
    """Enroll a worker (a person not yet registered registers first)."""

    prefix = "enroll"


@dataclasses.dataclass(frozen=True)
class WebLink(Action):
    """A one-time sign-in link to the web workbench (staff: PIC, leader, administrator;
    `handlers.web_link` tells anybody else the pages are for staff)."""

    prefix = "web"


@dataclasses.dataclass(frozen=True)
class Ask(Action):
    """ "Tanya PIC": a question to a person (ASN or worker; the flow says who may)."""

    prefix = "ask"


# -- the ASN ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Workers(Action):
    """My workers: status, dues and what can be done for each."""

    prefix = "workers"
    guard = Guard.ASN


@dataclasses.dataclass(frozen=True)
class Pay(Action):
    """Record a payment of dues."""

    prefix = "pay"
    guard = Guard.ASN


@dataclasses.dataclass(frozen=True)
class ChangePlan(Action):
    """Change how a worker's dues are paid."""

    prefix = "plan"
    guard = Guard.ASN


@dataclasses.dataclass(frozen=True)
class StopSponsoring(Action):
    """Stop sponsoring a worker."""

    prefix = "stop"
    guard = Guard.ASN


@dataclasses.dataclass(frozen=True)
class Fix(Action):
    """Correct enrollment `sponsorship` the PIC returned."""

    prefix = "fix"
    guard = Guard.ASN
    sponsorship: int


@dataclasses.dataclass(frozen=True)
class ConsentLink(Action):
    """A Telegram consent link for the worker of `sponsorship` to open."""

    prefix = "clink"
    guard = Guard.ASN
    sponsorship: int


@dataclasses.dataclass(frozen=True)
class ConsentForm(Action):
    """The printable consent form of the worker of `sponsorship`."""

    prefix = "cform"
    guard = Guard.ASN
    sponsorship: int


# -- the worker on WhatsApp --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Consent(Action):
    """The worker's YA / TIDAK: the consent template's quick replies carry the
    enrollment (`consent:yes:<id>`); the typed words answer the newest request."""

    prefix = "consent"
    namespace = ""
    answer: Literal["yes", "no"]
    sponsorship: int | None = None


@dataclasses.dataclass(frozen=True)
class WorkerStatus(Action):
    """ "STATUS": the worker's own records."""

    prefix = "wstatus"
    guard = Guard.WORKER


@dataclasses.dataclass(frozen=True)
class Erase(Action):
    """ "HAPUS": the worker's data is erased, after a confirmation."""

    prefix = "erase"
    guard = Guard.WORKER


# -- the PIC -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PicHome(Action):
    """The PIC menu."""

    prefix = "pic"
    guard = Guard.PIC


@dataclasses.dataclass(frozen=True)
class PicQueue(Action):
    """Check the enrollments waiting."""

    prefix = "pic_queue"
    guard = Guard.PIC


@dataclasses.dataclass(frozen=True)
class PicCards(Action):
    """Record cards handed over."""

    prefix = "pic_cards"
    guard = Guard.PIC


@dataclasses.dataclass(frozen=True)
class PicPayments(Action):
    """Confirm the payments waiting."""

    prefix = "pic_payments"
    guard = Guard.PIC


@dataclasses.dataclass(frozen=True)
class PicExport(Action):
    """The collective file of the accepted enrollments."""

    prefix = "pic_export"
    guard = Guard.PIC


@dataclasses.dataclass(frozen=True)
class PicSubmit(Action):
    """Batch `batch` was sent to BPJS."""

    prefix = "pic_submit"
    guard = Guard.PIC
    batch: int


@dataclasses.dataclass(frozen=True)
class PicBatches(Action):
    """The files exported before."""

    prefix = "pic_batches"
    guard = Guard.PIC


@dataclasses.dataclass(frozen=True)
class PicBatch(Action):
    """Batch `batch`'s file again."""

    prefix = "pic_batch"
    guard = Guard.PIC
    batch: int


@dataclasses.dataclass(frozen=True)
class PicImport(Action):
    """How to send BPJS's KPJ file."""

    prefix = "pic_import"
    guard = Guard.PIC


@dataclasses.dataclass(frozen=True)
class PicApply(Action):
    """Apply the KPJ numbers of import `upload`."""

    prefix = "pic_apply"
    guard = Guard.PIC
    upload: int


@dataclasses.dataclass(frozen=True)
class PicDiscard(Action):
    """Throw import `upload` away."""

    prefix = "pic_discard"
    guard = Guard.PIC
    upload: int


@dataclasses.dataclass(frozen=True)
class PicPayroll(Action):
    """Payroll deduction: the months to mark, or who `month` would mark."""

    prefix = "pic_payroll"
    guard = Guard.PIC
    month: date | None = None


@dataclasses.dataclass(frozen=True)
class PicPayrollConfirm(Action):
    """Mark `month` paid for the `count` people the PIC was shown."""

    prefix = "pic_payroll_ok"
    guard = Guard.PIC
    month: date
    count: Count


@dataclasses.dataclass(frozen=True)
class PicPayrollUndo(Action):
    """Take back today's payroll marks of `month`."""

    prefix = "pic_payroll_undo"
    guard = Guard.PIC
    month: date


@dataclasses.dataclass(frozen=True)
class PicOverdue(Action):
    """The OPD's sponsorships in arrears."""

    prefix = "pic_overdue"
    guard = Guard.PIC


@dataclasses.dataclass(frozen=True)
class PicTickets(Action):
    """The open questions of the PIC's OPD."""

    prefix = "tickets"
    guard = Guard.PIC


# -- questions and the administrator -----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TicketShow(Action):
    """Question `ticket` with its thread."""

    prefix = "tk"
    guard = Guard.STAFF
    ticket: int


@dataclasses.dataclass(frozen=True)
class TicketAnswer(Action):
    """Answer question `ticket`."""

    prefix = "tkr"
    guard = Guard.STAFF
    ticket: int


@dataclasses.dataclass(frozen=True)
class TicketClose(Action):
    """Close question `ticket`."""

    prefix = "tkc"
    guard = Guard.STAFF
    ticket: int


@dataclasses.dataclass(frozen=True)
class AdminHome(Action):
    """The administrator's menu."""

    prefix = "admin"
    guard = Guard.ADMIN


@dataclasses.dataclass(frozen=True)
class AdminTickets(Action):
    """The questions waiting for an administrator."""

    prefix = "admin_tickets"
    guard = Guard.ADMIN


for _action in every_action():
    _check(_action)
