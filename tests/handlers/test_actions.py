"""Typed actions (issue 12, "Structure"): one class per action, packed and unpacked in
one place, guarded once by the engine; buttons already in people's chats still work."""

from __future__ import annotations

import dataclasses
from datetime import date

import pytest

from domain.vocabulary import Channel, Language
from handlers import actions, engine
from handlers.actions import Action, Count, Guard
from handlers.parsing import MAX_RECORD_ID
from handlers.types import MAX_OPTION_ID_BYTES
from tests.fakes.chat import Chat
from tests.fakes.ways_on import assert_way_on

#: Payloads the bot has put on buttons since its first release, and the WhatsApp
#: consent template's quick replies (stored by Meta): each must still mean the same.
WIRE = {
    "g:start": actions.Start(),
    "g:menu": actions.Menu(),
    "g:cancel": actions.Cancel(),
    "g:discard": actions.Discard(),
    "g:help": actions.Help(),
    "g:helpmenu": actions.HelpMenu(),
    "g:back": actions.Back(),
    "g:resume": actions.Resume(),
    "g:fresh:enrollment": actions.Fresh("enrollment"),
    "g:info": actions.Info(),
    "g:info:where": actions.Info("where"),
    "g:language": actions.ChooseLanguage(),
    "g:language:en": actions.ChooseLanguage(Language.ENGLISH),
    "g:register": actions.Register(),
    "g:enroll": actions.Enroll(),
    "g:ask": actions.Ask(),
    "g:workers": actions.Workers(),
    "g:pay": actions.Pay(),
    "g:plan": actions.ChangePlan(),
    "g:stop": actions.StopSponsoring(),
    "g:fix:12": actions.Fix(12),
    "g:clink:7": actions.ConsentLink(7),
    "g:cform:7": actions.ConsentForm(7),
    "consent:yes:5": actions.Consent("yes", 5),
    "consent:no:5": actions.Consent("no", 5),
    "g:wstatus": actions.WorkerStatus(),
    "g:erase": actions.Erase(),
    "g:pic": actions.PicHome(),
    "g:pic_queue": actions.PicQueue(),
    "g:pic_cards": actions.PicCards(),
    "g:pic_payments": actions.PicPayments(),
    "g:pic_export": actions.PicExport(),
    "g:pic_submit:3": actions.PicSubmit(3),
    "g:pic_batches": actions.PicBatches(),
    "g:pic_batch:3": actions.PicBatch(3),
    "g:pic_import": actions.PicImport(),
    "g:pic_apply:4": actions.PicApply(4),
    "g:pic_discard:4": actions.PicDiscard(4),
    "g:pic_payroll": actions.PicPayroll(),
    "g:pic_payroll:2026-11": actions.PicPayroll(date(2026, 11, 1)),
    "g:pic_payroll_ok:2026-12:0": actions.PicPayrollConfirm(date(2026, 12, 1), Count(0)),
    "g:pic_payroll_undo:2026-12": actions.PicPayrollUndo(date(2026, 12, 1)),
    "g:pic_overdue": actions.PicOverdue(),
    "g:tickets": actions.PicTickets(),
    "g:tk:9": actions.TicketShow(9),
    "g:tkr:9": actions.TicketAnswer(9),
    "g:tkc:9": actions.TicketClose(9),
    "g:admin": actions.AdminHome(),
    "g:admin_tickets": actions.AdminTickets(),
    "g:web": actions.WebLink(),
}


@pytest.mark.parametrize(("payload", "action"), WIRE.items())
def test_the_payloads_already_in_chats_keep_their_meaning(payload: str, action: Action) -> None:
    assert actions.parse(payload) == action
    assert action.pack() == payload


def test_every_action_has_a_payload_in_the_wire_list_and_a_handler() -> None:
    assert {type(action) for action in WIRE.values()} == set(actions.every_action())
    assert set(engine._ROUTES) == set(actions.every_action())


@pytest.mark.parametrize(
    "payload",
    [
        "consent:yes:²",
        f"consent:no:{'9' * 20}",
        "consent:maybe:5",
        "consent:no:",
        "consent:yes:5:6",
        "g:fix:²",
        "g:fix:0",
        "g:fix:-1",
        f"g:fix:{MAX_RECORD_ID + 1}",
        "g:fix",
        "g:fix:١٢",
        "g:pic_payroll:2026-13",
        "g:pic_payroll:2026-1",
        "g:pic_payroll_ok:2026-11:",
        "g:pic_payroll_ok:2026-11:-1",
        "g:info:secret",
        "g:language:fr",
        "g:fresh:Enrollment",
        "g:menu:extra",
    ],
)
def test_a_malformed_or_forged_payload_unpacks_to_nothing(payload: str) -> None:
    kind = actions.lookup(payload)
    assert kind is not None  # a known action, so the engine answers its own way
    assert kind.unpack(payload) is None
    assert actions.parse(payload) is None


@pytest.mark.parametrize("payload", ["g:", "g:nothing", "3:plan:monthly", "", "consentx:yes"])
def test_a_payload_of_no_action_is_not_looked_up(payload: str) -> None:
    assert actions.lookup(payload) is None


def test_a_payload_that_would_not_fit_a_button_is_refused_when_packed() -> None:
    assert len(actions.Fix(MAX_RECORD_ID).pack().encode()) <= MAX_OPTION_ID_BYTES
    with pytest.raises(ValueError, match="longer than"):
        actions.Fresh("a" * 32 + "_" * 20).pack()


def test_a_typo_in_an_action_class_fails_where_it_is_defined() -> None:
    with pytest.raises(TypeError, match="two actions"):

        @dataclasses.dataclass(frozen=True)
        class AnotherMenu(Action):
            prefix = "menu"

    with pytest.raises(TypeError, match="lower-case name"):

        @dataclasses.dataclass(frozen=True)
        class Shouting(Action):
            prefix = "Shout:now"


def test_every_guard_is_used_and_every_action_declares_one() -> None:
    assert {kind.guard for kind in actions.every_action()} == set(Guard)


# -- the guard, checked once by the engine -------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        ("g:pay", "belum terdaftar sebagai ASN"),
        ("g:fix:3", "belum terdaftar sebagai ASN"),
        ("g:clink:3", "belum terdaftar sebagai ASN"),
        ("g:pic_export", "khusus untuk PIC OPD"),
        ("g:pic_payroll_ok:2026-12:1", "khusus untuk PIC OPD"),
        ("g:pic_payroll_ok:2026-13:1", "khusus untuk PIC OPD"),  # guard before validation
        ("g:tk:1", "khusus untuk PIC OPD"),
        ("g:admin_tickets", "khusus untuk administrator"),
        ("g:wstatus", "hanya tersedia lewat WhatsApp"),
        ("g:erase", "hanya tersedia lewat WhatsApp"),
    ],
)
async def test_a_guarded_action_is_refused_once_with_the_way_on(
    guest: Chat, payload: str, says: str
) -> None:
    await guest.press_id(payload)
    assert says in guest.replies[0].text
    assert_way_on(guest.replies)
    assert "Daftar sebagai ASN" in guest.labels()[0]


async def test_the_same_action_typed_or_pressed_is_guarded_the_same(guest: Chat) -> None:
    await guest.say("/bayar")
    typed = [reply.text for reply in guest.replies]
    await guest.press_id(actions.Pay().pack())
    assert [reply.text for reply in guest.replies] == typed
    await guest.say("status")  # the worker's word, on Telegram
    assert "hanya tersedia lewat WhatsApp" in guest.replies[0].text
    assert_way_on(guest.replies)


async def test_an_unknown_menu_payload_says_it_no_longer_applies(asn: Chat) -> None:
    await asn.press_id("g:nothing:1")
    assert "sudah tidak berlaku" in asn.replies[0].text
    assert_way_on(asn.replies)


async def test_a_forged_consent_payload_from_a_telegram_user_shows_the_menu(asn: Chat) -> None:
    await asn.press_id("consent:yes:²")
    assert_way_on(asn.replies)
    assert "Daftarkan pekerja" in " ".join(asn.labels())


async def test_a_worker_number_without_records_gets_the_worker_guard_through(
    guest: Chat,
) -> None:
    stranger = Chat(
        guest.engine,
        guest.clock,
        sender="6281211112222",
        channel=Channel.WHATSAPP,
        sender_phone="+6281211112222",
    )
    await stranger.press_id(actions.WorkerStatus().pack())
    assert "hanya tersedia lewat WhatsApp" not in stranger.text
    assert_way_on(stranger.replies)
