"""Meta's webhook JSON -> journal entries -> InboundEvent (bot/whatsapp/events.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from bot.whatsapp.events import PayloadError, StatusUpdate, parse_webhook, to_event
from domain.vocabulary import Channel, DeliveryStatus
from handlers.types import EventKind, InboundEvent
from tests.fakes import whatsapp_payloads as wa
from tests.fakes.whatsapp_payloads import BUDI, RINA, SITI

RECEIVED = datetime(2026, 11, 21, 3, 5, tzinfo=UTC)


def event_of(incoming: wa.Incoming) -> InboundEvent | None:
    """The event the processor would hand the engine for this message."""
    batch = parse_webhook(json.loads(wa.encode(wa.webhook(incoming))))
    if not batch.messages:
        return None
    [entry] = batch.messages
    assert entry.message_id == incoming.id
    return to_event(entry.message_id, entry.payload, received_at=RECEIVED)


def test_a_text_names_the_sender_by_number_and_the_number_as_their_phone() -> None:
    incoming = wa.text(SITI, "halo")
    event = event_of(incoming)
    assert event == InboundEvent(
        channel=Channel.WHATSAPP,
        sender_id="6281234567890",
        update_id=incoming.id,
        kind=EventKind.TEXT,
        received_at=datetime(2026, 11, 21, 3, 0, tzinfo=UTC),  # the message's own timestamp
        text="halo",
        sender_phone="+6281234567890",
        display_name="Siti Aminah",
    )


def test_a_person_with_a_hidden_number_is_known_by_their_user_id_without_a_phone() -> None:
    event = event_of(wa.text(RINA, "halo"))
    assert event is not None
    assert (event.sender_id, event.sender_phone, event.display_name) == (
        "ID.5571029384756102",
        None,
        "Rina",
    )
    [entry] = parse_webhook(wa.webhook(wa.text(RINA, "x"))).messages
    assert entry.sender_id == "ID.5571029384756102"


@pytest.mark.parametrize("wa_id", ["６２８１２３４５６７８９０", "62812345678²", "٦٢٨١٢٣٤٥٦٧٨٩٠"])
def test_a_wa_id_of_other_digits_than_0_to_9_is_no_phone(wa_id: str) -> None:
    event = event_of(wa.text(wa.WaUser(wa_id=wa_id, user_id="ID.1"), "halo"))
    assert event is not None
    assert (event.sender_id, event.sender_phone) == (wa_id, None)


def test_a_slash_word_is_a_command_like_on_telegram() -> None:
    event = event_of(wa.text(SITI, "/Start PIC-7K3QX9AB"))
    assert event is not None
    assert (event.kind, event.command, event.command_args) == (
        EventKind.COMMAND,
        "start",
        "PIC-7K3QX9AB",
    )
    plain = event_of(wa.text(SITI, "/ not a command"))
    assert plain is not None and plain.kind is EventKind.TEXT


@pytest.mark.parametrize(
    "incoming",
    [
        wa.button_reply(SITI, "3:yes", "Ya"),
        wa.list_reply(SITI, "3:yes", "Ya", "Lanjutkan"),
    ],
    ids=["button_reply", "list_reply"],
)
def test_a_pressed_button_or_list_row_is_a_choice_with_our_option_id(
    incoming: wa.Incoming,
) -> None:
    event = event_of(incoming)
    assert event is not None
    assert (event.kind, event.choice_id) == (EventKind.CHOICE, "3:yes")


def test_an_old_questions_option_id_is_passed_through_for_the_engine_to_judge() -> None:
    event = event_of(wa.button_reply(SITI, "1:confirm", "Konfirmasi"))
    assert event is not None
    assert event.choice_id == "1:confirm"


def test_a_templates_quick_reply_is_a_choice_with_its_payload_and_label() -> None:
    event = event_of(wa.quick_reply(SITI, "consent:yes:41", "YA"))
    assert event is not None
    assert (event.kind, event.choice_id, event.text) == (EventKind.CHOICE, "consent:yes:41", "YA")


def test_text_typed_instead_of_pressing_a_button_is_just_text() -> None:
    event = event_of(wa.text(SITI, "ya"))
    assert event is not None
    assert (event.kind, event.text, event.choice_id) == (EventKind.TEXT, "ya", None)


def test_photos_and_documents_carry_the_media_id_and_file_name() -> None:
    photo = event_of(wa.image(SITI, media_id="77", caption="bukti bayar"))
    assert photo is not None
    assert (photo.kind, photo.file_ref, photo.text) == (EventKind.PHOTO, "77", "bukti bayar")
    doc = event_of(wa.document(SITI, media_id="88", filename="kpj.xlsx"))
    assert doc is not None
    assert (doc.kind, doc.file_ref, doc.file_name, doc.file_content) == (
        EventKind.DOCUMENT,
        "88",
        "kpj.xlsx",
        None,
    )


@pytest.mark.parametrize(
    "incoming",
    [wa.sticker(SITI), wa.location(SITI), wa.audio(SITI), wa.unknown(SITI, "poll")],
    ids=["sticker", "location", "audio", "unknown type"],
)
def test_what_the_bot_cannot_read_is_recorded_and_unsupported(incoming: wa.Incoming) -> None:
    event = event_of(incoming)
    assert event is not None
    assert event.kind is EventKind.UNSUPPORTED
    assert event.update_id == incoming.id


def test_a_reaction_is_not_recorded_at_all() -> None:
    batch = parse_webhook(wa.webhook(wa.reaction(SITI, wa.message_id())))
    assert batch.messages == ()
    assert batch.ignored == 1


def test_one_body_with_several_senders_keeps_each_message_with_its_sender() -> None:
    first, second, third = wa.text(SITI, "a"), wa.text(BUDI, "b"), wa.text(SITI, "c")
    batch = parse_webhook(wa.webhook(first, second, third))
    assert [(m.message_id, m.sender_id) for m in batch.messages] == [
        (first.id, SITI.sender_id),
        (second.id, BUDI.sender_id),
        (third.id, SITI.sender_id),
    ]
    events = [to_event(m.message_id, m.payload, received_at=RECEIVED) for m in batch.messages]
    assert [e.display_name for e in events if e] == ["Siti Aminah", "Budi Santoso", "Siti Aminah"]


def test_statuses_with_and_without_errors() -> None:
    sent, failed = wa.message_id(), wa.message_id()
    batch = parse_webhook(
        wa.webhook(
            statuses=[
                wa.status(sent, "delivered"),
                wa.status(failed, "failed", error_code=131047),
                wa.status(sent, "played"),  # voice notes only: nothing to record
            ]
        )
    )
    at = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
    assert batch.statuses == (
        StatusUpdate(sent, DeliveryStatus.DELIVERED, at),
        StatusUpdate(failed, DeliveryStatus.FAILED, at, 131047, "Re-engagement message"),
    )
    assert batch.ignored == 1


def test_other_fields_are_ignored() -> None:
    assert parse_webhook(wa.account_update()) == parse_webhook({"object": "page", "entry": []})
    assert parse_webhook(wa.account_update()).messages == ()


@pytest.mark.parametrize(
    "document",
    [[], "text", {"object": "whatsapp_business_account", "entry": {"id": 1}}],
    ids=["list", "string", "entry not a list"],
)
def test_json_that_is_not_an_envelope_is_refused(document: object) -> None:
    with pytest.raises(PayloadError):
        parse_webhook(document)


def test_a_message_without_id_or_sender_is_skipped_not_fatal() -> None:
    good = wa.text(SITI, "ok")
    nameless = {"id": wa.message_id(), "timestamp": "1763694000", "type": "text", "text": {}}
    body = wa.webhook(good)
    value = body["entry"][0]["changes"][0]["value"]
    value["messages"] += [{"type": "text"}, nameless]
    value["contacts"].append(BUDI.contact())  # two contacts: the nameless one matches neither
    batch = parse_webhook(body)
    assert [m.message_id for m in batch.messages] == [good.id]
    assert batch.ignored == 2


def test_a_message_or_status_id_the_journal_cannot_hold_is_skipped_not_fatal() -> None:
    """NUL, a lone surrogate or more than 128 characters would fail the whole webhook
    transaction on PostgreSQL (500, and Meta retrying the body for days)."""
    good = wa.text(SITI, "ok")
    odd = [
        wa.text(SITI, "x", id="wamid.\x00"),
        wa.text(SITI, "x", id="wamid.\ud800"),
        wa.text(SITI, "x", id="w" * 129),
        wa.text(wa.WaUser(wa_id="62812\x00", user_id="ID.2"), "x"),
    ]
    batch = parse_webhook(wa.webhook(good, *odd, statuses=[wa.status("wamid.\x00", "delivered")]))
    assert [m.message_id for m in batch.messages] == [good.id]
    assert batch.statuses == ()
    assert batch.ignored == len(odd) + 1


def test_a_lone_surrogate_in_a_text_is_recorded_as_an_escape() -> None:
    # json.loads gives "\ud800" for the escape "\\ud800" in a body; UTF-8 cannot encode it.
    [entry] = parse_webhook(wa.webhook(wa.text(SITI, "ha\ud800lo"))).messages
    entry.payload.encode("utf-8")  # what the journal encrypts
    event = to_event(entry.message_id, entry.payload, received_at=RECEIVED)
    assert event is not None and event.text == "ha\ud800lo"  # the engine drops it
