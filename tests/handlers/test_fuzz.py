"""Fuzz the real engine with odd text, forged buttons and mangled WhatsApp payloads (issue 11).

From several conversation states (a fresh person, mid-registration,
mid-enrollment, mid-payment, the PIC's menu and queue) each example sends one event: random
Unicode text (NUL, right-to-left marks, digits of other scripts, strings of
thousands of characters), a command, random callback data (random bytes, or a
real option id mutated), a file or contact with random fields, or a WhatsApp
webhook body built from `tests/fakes/whatsapp_payloads.py`, mutated, and taken
as the webhook and the processor do through `bot.whatsapp.events` and the
journal (`storage.whatsapp_inbound.record`). Asserted: nothing raises (a body
that is no envelope is refused with `PayloadError`, as the webhook answers 400),
and every event that is not a replay gets at least one reply with text.

Every example starts from the state: the conversation rows are put back to a
snapshot taken after the set-up (the fixtures are built once per test, which is
why the function-scoped-fixture health check is suppressed). The database is the
suite's: SQLite, or PostgreSQL with TEST_DATABASE_URL.

Budget: `EXAMPLES` (100) examples per state, one event each, eight states: 1-5 s
per state on SQLite or PostgreSQL on the shared 2-core test machine, about 25 s
for the file. Raise it to search longer, e.g. `FUZZ_EXAMPLES=1500` (about 5
minutes on SQLite).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import os
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.whatsapp.events import PayloadError, parse_webhook, to_event
from domain.vocabulary import Channel
from handlers.engine import Engine
from handlers.parsing import storable
from handlers.types import EventKind, InboundEvent, Reply
from storage.crypto import NikCipher
from storage.models import Conversation
from storage.whatsapp_inbound import record
from tests.fakes import whatsapp_payloads as wa
from tests.fakes.chat import ASN_NIP, TEST_KEY, WORKER_NIK, Chat, build_engine, seed_opds
from tests.fakes.clock import FrozenClock
from tests.fakes.workbench import activate, build_office

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    # The fixtures are shared on purpose; each example restores the conversations.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_ids = itertools.count(1)
_CIPHER = NikCipher(TEST_KEY)
_fresh_people = itertools.count(1)

# -- what people type ----------------------------------------------------------------------

#: Digits of several scripts, superscripts and fractions (str.isdigit() takes most of them).
_DIGITS = "0123456789²³¹⁴½⅓٠١٢٣٤٥٦٧٨٩۰۱۲۳۴०१२३४৪௫๓༣၅１２３４𝟘𝟙𝟚"
_RTL = ["שלום", "مرحبا ١٢٣", "\u202eevil\u202c", "\u200f12-05-1990", "سيتي أمينة"]
#: Answers that mean something somewhere, so examples also get past a question.
_REAL = [
    "Siti Aminah", WORKER_NIK, ASN_NIP, "07-08-1990", "081298765432", "kesehatan", "1", "2",
    "3", "semua", "batal", "menu", "kembali", "bantuan", "ya", "tidak", "status", "hapus",
    "bayar", "pic", "PIC-7K3QX9AB", "50.400", "Rp 16.800", "1 3", "Siti, Joko",
]  # fmt: skip
_INSERTS = [
    "²", "12345678901234567890", "2147483648", "-1", "0", "\x00", "٣", "３", ":", "g:", " ",
    "999999999999", "\u202e",
]  # fmt: skip

odd_text = st.one_of(
    st.text(max_size=40),  # any code point but surrogates, NUL included
    st.text(alphabet=_DIGITS + " -/.,:", max_size=24),
    st.sampled_from(_REAL + _RTL),
    st.builds(lambda a, b: f"{a}\x00{b}", st.sampled_from(_REAL), st.text(max_size=8)),
    st.builds(
        lambda unit, n: unit * n, st.sampled_from(["9", "²", "a", "٣", "\u202e", "Siti "]),
        st.integers(100, 6000),
    ),
)  # fmt: skip

#: Real option ids of every kind the engine issues, to mutate alongside the question's own.
_KNOWN_IDS = [
    "3:plan:monthly", "g:fix:12", "g:pic", "g:pic_queue", "g:pic_cards", "g:pic_payments",
    "g:pic_export", "g:pic_submit:1", "g:pic_batch:1", "g:pic_batches", "g:pic_import",
    "g:pic_apply:1", "g:pic_discard:1", "g:pic_payroll:2026-11", "g:pic_overdue",
    "g:info:dues", "g:info", "g:language:en", "g:fresh:enrollment", "g:resume", "g:menu",
    "g:enroll", "g:register", "g:pay", "g:plan", "g:erase", "g:wstatus", "g:workers",
    "consent:yes:1", "consent:no:", "g:consent:yes:1", "g:stop", "g:discard", "g:info:where",
    "g:pic_payroll_ok:2026-11:1", "g:pic_payroll_ok:2026-11:", "g:pic_payroll_undo:2026-11",
]  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn, seeds: Sequence[str]) -> str:
    """A seed with up to three slices replaced by odd pieces."""
    text = draw(st.sampled_from(seeds))
    for _ in range(draw(st.integers(0, 3))):
        start = draw(st.integers(0, len(text)))
        end = draw(st.integers(start, len(text)))
        piece = draw(st.one_of(st.sampled_from(["", *_INSERTS]), st.text(max_size=6)))
        text = text[:start] + piece + text[end:]
    return text


def callback_data(seeds: Sequence[str]) -> st.SearchStrategy[str]:
    """What a forged or stale button may carry: up to 64 random bytes, or a mutated id."""
    raw = st.binary(max_size=64).map(lambda b: b.decode("utf-8", "surrogateescape"))
    return st.one_of(raw, mutated([*seeds, *_KNOWN_IDS]))


def telegram_events(seeds: Sequence[str]) -> st.SearchStrategy[dict[str, Any]]:
    """The fields of one inbound event as a channel adapter could build it."""
    words = st.one_of(st.sampled_from(["start", "daftar", "pic", "bayar", "menu"]), odd_text)
    return st.fixed_dictionaries(
        {},
        optional={"display_name": odd_text, "language_hint": st.text(max_size=6)},
    ).flatmap(
        lambda extra: st.one_of(
            odd_text.map(lambda t: {"kind": EventKind.TEXT, "text": t}),
            st.tuples(words, st.none() | odd_text).map(
                lambda c: {"kind": EventKind.COMMAND, "text": f"/{c[0]}", "command": c[0],
                           "command_args": c[1]}
            ),
            callback_data(seeds).map(lambda d: {"kind": EventKind.CHOICE, "choice_id": d}),
            st.builds(
                lambda kind, ref, name, content: {"kind": kind, "file_ref": ref,
                                                  "file_name": name, "file_content": content},
                st.sampled_from([EventKind.PHOTO, EventKind.DOCUMENT]),
                st.one_of(odd_text, st.just("AgACAgUAAxkBAAIB")),
                st.none() | odd_text,
                st.none() | st.binary(max_size=64) | st.just(b"NIK,KPJ\n3201014708900001,1\n"),
            ),
            st.builds(
                lambda phone, own: {"kind": EventKind.CONTACT, "contact_phone": phone,
                                    "contact_is_own": own},
                st.none() | odd_text, st.booleans(),
            ),
            st.just({"kind": EventKind.UNSUPPORTED}),
        ).map(lambda fields: {**extra, **fields})
    )  # fmt: skip


# -- the states ---------------------------------------------------------------------------


@dataclasses.dataclass
class Scene:
    """A conversation state to fuzz from: who speaks, and the conversations to restore."""

    engine: Engine
    clock: FrozenClock
    database: AsyncEngine
    #: The sender of every example; None: a new person each time.
    sender: str | None
    channel: Channel
    #: Option ids of the question the person was last asked.
    seeds: list[str]
    snapshot: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    #: Update ids handled so far (a WhatsApp message id may be mutated into an old one).
    seen: set[str] = dataclasses.field(default_factory=set)

    async def take_snapshot(self) -> None:
        columns = (Conversation.id, Conversation.flow, Conversation.step, Conversation.data,
                   Conversation.history, Conversation.draft, Conversation.version)  # fmt: skip
        async with self.database.connect() as connection:
            rows = (await connection.execute(select(*columns))).mappings().all()
        self.snapshot = [dict(row) for row in rows]

    async def restore(self) -> None:
        async with self.database.begin() as connection:
            for row in self.snapshot:
                values = {key: value for key, value in row.items() if key != "id"}
                await connection.execute(
                    update(Conversation).where(Conversation.id == row["id"]).values(**values)
                )

    def who(self) -> str:
        return self.sender or str(900_000 + next(_fresh_people))


def _seeds(replies: Sequence[Reply]) -> list[str]:
    return [option.id for reply in replies for option in reply.options] or ["g:menu"]


async def _fresh(sessionmaker: async_sessionmaker[AsyncSession], channel: Channel) -> Scene:
    clock = FrozenClock()
    await seed_opds(sessionmaker, clock)
    engine = build_engine(sessionmaker, clock, worker_channel=Channel.WHATSAPP)
    return Scene(engine, clock, sessionmaker.kw["bind"], None, channel, ["g:register"])


async def _registering(sessionmaker: async_sessionmaker[AsyncSession], channel: Channel) -> Scene:
    scene = await _fresh(sessionmaker, channel)
    phone = "+6281234567890" if channel is Channel.WHATSAPP else None
    chat = Chat(scene.engine, scene.clock, "6281234567890", channel, sender_phone=phone)
    await chat.say("/start")
    await chat.press("Daftar sebagai ASN")
    await chat.press("Setuju")
    await chat.say(ASN_NIP)
    await chat.say("Budi Santoso")
    await chat.say("kesehatan")  # the OPD question, with one button per match
    scene.sender, scene.seeds = chat.sender, _seeds(chat.replies)
    return scene


async def _enrolling(sessionmaker: async_sessionmaker[AsyncSession], channel: Channel) -> Scene:
    scene = await _fresh(sessionmaker, channel)
    chat = Chat(scene.engine, scene.clock, "1001", channel)
    await chat.register()
    await chat.say("/daftar")
    await chat.press("Bekerja untuk saya")
    await chat.press("Asisten rumah tangga")
    await chat.say("Siti Aminah")
    await chat.say(WORKER_NIK)  # the birth date question: a button or a typed date
    scene.sender, scene.seeds = chat.sender, _seeds(chat.replies)
    return scene


async def _pic(sessionmaker: async_sessionmaker[AsyncSession], *, queue: bool) -> Scene:
    office = await build_office(sessionmaker, worker_channel=Channel.WHATSAPP)
    await office.enroll()
    await office.pic.say("pic")
    if queue:
        await office.pic.press("Periksa pendaftaran")
    scene = Scene(office.engine, office.clock, sessionmaker.kw["bind"], office.pic.sender,
                  Channel.TELEGRAM, _seeds(office.pic.replies))  # fmt: skip
    return scene


async def _paying(sessionmaker: async_sessionmaker[AsyncSession]) -> Scene:
    office = await build_office(sessionmaker, worker_channel=Channel.WHATSAPP)
    await activate(office, (WORKER_NIK, "Siti Aminah"))
    await office.asn.say("bayar")  # how many months: buttons, or a typed number
    return Scene(office.engine, office.clock, sessionmaker.kw["bind"], office.asn.sender,
                 Channel.TELEGRAM, _seeds(office.asn.replies))  # fmt: skip


SceneBuilder = Callable[[async_sessionmaker[AsyncSession]], Awaitable[Scene]]
TELEGRAM_SCENES: dict[str, SceneBuilder] = {
    "fresh": lambda sm: _fresh(sm, Channel.TELEGRAM),
    "mid_registration": lambda sm: _registering(sm, Channel.TELEGRAM),
    "mid_enrollment": lambda sm: _enrolling(sm, Channel.TELEGRAM),
    "pic_menu": lambda sm: _pic(sm, queue=False),
    "pic_queue": lambda sm: _pic(sm, queue=True),
    "mid_payment": _paying,
}
WHATSAPP_SCENES: dict[str, SceneBuilder] = {
    "fresh": lambda sm: _fresh(sm, Channel.WHATSAPP),
    "mid_registration": lambda sm: _registering(sm, Channel.WHATSAPP),
}


def _assert_answered(event: InboundEvent, replies: Sequence[Reply], seen: set[str]) -> None:
    update_id = storable(event.update_id)
    if update_id in seen:
        return  # a replay: no effect and nothing to say
    seen.add(update_id)
    assert any(reply.text.strip() for reply in replies), (event.kind, replies)


@pytest.fixture(params=sorted(TELEGRAM_SCENES))
async def telegram_scene(
    request: pytest.FixtureRequest, sessionmaker: async_sessionmaker[AsyncSession]
) -> Scene:
    scene = await TELEGRAM_SCENES[request.param](sessionmaker)
    await scene.take_snapshot()
    return scene


@pytest.fixture(params=sorted(WHATSAPP_SCENES))
async def whatsapp_scene(
    request: pytest.FixtureRequest, sessionmaker: async_sessionmaker[AsyncSession]
) -> Scene:
    scene = await WHATSAPP_SCENES[request.param](sessionmaker)
    await scene.take_snapshot()
    return scene


# -- Telegram-shaped events ---------------------------------------------------------------


@FUZZ
@given(data=st.data())
async def test_random_text_and_buttons_never_crash_a_step(
    telegram_scene: Scene, data: st.DataObject
) -> None:
    scene = telegram_scene
    await scene.restore()
    event = InboundEvent(
        channel=scene.channel,
        sender_id=scene.who(),
        update_id=f"fuzz-{next(_ids)}",  # apart from the set-up's ids (tests.fakes.chat)
        received_at=scene.clock(),
        **data.draw(telegram_events(scene.seeds)),
    )
    _assert_answered(event, await scene.engine.handle(event), scene.seen)


# -- WhatsApp payloads --------------------------------------------------------------------

_JSON_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**19, max_value=10**30),
    st.floats(allow_nan=False), odd_text,
    st.sampled_from(["\ud800", "a\udfffb", "\x00", "w" * 129]),  # ids the journal cannot hold
    st.sampled_from(["text", "interactive", "button", "image", "document", "sticker",
                     "request_welcome", "reaction", "system", "button_reply", "list_reply"]),
)  # fmt: skip
_JSON = st.recursive(
    _JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(node: object, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


@st.composite
def whatsapp_bodies(draw: st.DrawFn, user: wa.WaUser, seeds: Sequence[str]) -> dict[str, Any]:
    """A real webhook body of one message, with up to four places inside `value` changed."""
    option = draw(callback_data(seeds))
    makers: list[Callable[[], wa.Incoming]] = [
        lambda: wa.text(user, draw(odd_text)),
        lambda: wa.text(user, "/" + draw(odd_text)),
        lambda: wa.button_reply(user, option),
        lambda: wa.list_reply(user, option, draw(odd_text)),
        lambda: wa.quick_reply(user, option, draw(odd_text)),
        lambda: wa.image(user, caption=draw(st.none() | odd_text)),
        lambda: wa.document(user, filename=draw(odd_text)),
        lambda: wa.sticker(user),
        lambda: wa.location(user),
        lambda: wa.audio(user),
        lambda: wa.unknown(user),
        lambda: wa.reaction(user, wa.message_id()),
    ]
    incoming = draw(st.sampled_from(makers))()
    body = copy.deepcopy(wa.webhook(incoming))
    value = body["entry"][0]["changes"][0]["value"]
    for _ in range(draw(st.integers(0, 4))):
        path = draw(st.sampled_from(list(_paths(value))[1:]))
        parent = value
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "add" and isinstance(parent[path[-1]], dict):
            parent[path[-1]][draw(st.sampled_from(["id", "type", "body", "from", "x"]))] = draw(
                _JSON
            )
        else:
            parent[path[-1]] = draw(_JSON)
        if not isinstance(value, dict) or not value:
            break
    return body


@FUZZ
@given(data=st.data())
async def test_random_whatsapp_payloads_never_crash_a_step(
    whatsapp_scene: Scene, data: st.DataObject
) -> None:
    scene = whatsapp_scene
    await scene.restore()
    wa_id = scene.who()
    user = wa.WaUser(wa_id=wa_id, user_id=f"ID.{wa_id}", name=data.draw(odd_text))
    body = data.draw(whatsapp_bodies(user, scene.seeds))
    try:
        batch = parse_webhook(body)
    except PayloadError:
        return  # the webhook answers 400 and records nothing (tests/bot/test_whatsapp_webhook.py)
    async with scene.database.begin() as connection:  # the webhook's journal, as on PostgreSQL
        recorded = await record(connection, batch.messages, cipher=_CIPHER, now=scene.clock())
    for message in batch.messages:
        if message.message_id not in recorded:
            continue  # recorded before: the processor never takes it twice
        event = to_event(message.message_id, message.payload, received_at=scene.clock())
        if event is None:
            continue  # a reaction or system notice: nothing to answer
        _assert_answered(event, await scene.engine.handle(event), scene.seen)
