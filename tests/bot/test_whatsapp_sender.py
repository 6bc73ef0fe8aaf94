"""WhatsAppSender over HTTP to the fake Graph API: window, templates, every error's outcome."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from bot.whatsapp.client import WhatsAppClient, build_client
from bot.whatsapp.sender import WhatsAppSender
from bot.whatsapp.templates import TemplateBook
from domain.vocabulary import Channel, Language
from scheduler.sending import (
    Deferred,
    OutgoingNotice,
    Permanent,
    RetryAfter,
    Sent,
    Transient,
)
from tests.fakes.clock import FrozenClock
from tests.fakes.graph_api import FakeGraphServer

NOW = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
WA_ID = "6281234567890"
CARD = {"name": "Siti Aminah", "kpj": "12345678901", "opd": "Dinas Sosial"}


class Sleeps:
    def __init__(self) -> None:
        self.slept: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def sender(wa_client: WhatsAppClient, book: TemplateBook, sleeps: Sleeps) -> WhatsAppSender:
    return WhatsAppSender(wa_client, book, clock=FrozenClock(NOW), sleep=sleeps)


def notice(**overrides: Any) -> OutgoingNotice:
    values: dict[str, Any] = {
        "outbox_id": 7,
        "channel": Channel.WHATSAPP,
        "recipient": WA_ID,
        "kind": "card_ready",
        "body": "🎉 Halo Siti Aminah, kartu BPJS Ketenagakerjaan Anda sudah terbit.",
        "template": "card_ready_worker",
        "params": dict(CARD),
    }
    values.update(overrides)
    return OutgoingNotice(**values)


def in_window(**overrides: Any) -> OutgoingNotice:
    return notice(last_inbound_at=NOW - timedelta(hours=2), **overrides)


# --- window and template -------------------------------------------------------------------


async def test_inside_the_window_the_body_goes_as_free_text(
    graph: FakeGraphServer, sender: WhatsAppSender
) -> None:
    graph.open_window(WA_ID)
    result = await sender.send(in_window())
    [message] = graph.messages_to(WA_ID)
    assert (message.type, message.text) == ("text", in_window().body)
    assert result == Sent(provider_message_id=message.id)
    assert message.id.startswith("wamid.")


async def test_outside_the_window_the_template_goes_with_its_params_in_order(
    graph: FakeGraphServer, sender: WhatsAppSender
) -> None:
    never_wrote = notice()
    long_ago = notice(last_inbound_at=NOW - timedelta(hours=24))
    for each in (never_wrote, long_ago):
        assert isinstance(await sender.send(each), Sent)
    messages = graph.messages_to(WA_ID)
    assert [(m.template_name, m.template_language) for m in messages] == [
        ("sertakan_card_ready_worker", "id")
    ] * 2
    assert messages[0].template_params == ["Siti Aminah", "12345678901", "Dinas Sosial"]


async def test_the_template_is_in_the_recipients_language(
    graph: FakeGraphServer, sender: WhatsAppSender
) -> None:
    await sender.send(notice(recipient_language=Language.ENGLISH))
    [message] = graph.messages_to(WA_ID)
    assert message.template_language == "en"


async def test_a_template_only_row_never_goes_as_free_text(
    graph: FakeGraphServer, sender: WhatsAppSender
) -> None:
    graph.open_window(WA_ID)
    await sender.send(in_window(template_only=True))
    [message] = graph.messages_to(WA_ID)
    assert message.type == "template"


async def test_without_a_configured_template_outside_the_window_the_row_fails_visibly(
    graph: FakeGraphServer, sender: WhatsAppSender
) -> None:
    assert await sender.send(notice(template="not_configured")) == Permanent(
        "no template: not_configured"
    )
    assert await sender.send(notice(template=None, kind="returned")) == Permanent(
        "no template: returned"
    )
    assert graph.calls == []


async def test_a_window_closed_after_all_gets_the_template_at_once(
    graph: FakeGraphServer, sender: WhatsAppSender
) -> None:
    """Our clock says the window is open; WhatsApp says 131047: the template follows."""
    result = await sender.send(in_window())
    [template] = graph.messages_to(WA_ID)
    assert template.type == "template"
    assert result == Sent(provider_message_id=template.id)
    assert graph.errors == {131047: 1}


async def test_a_window_closed_without_a_template_fails_visibly(
    graph: FakeGraphServer, sender: WhatsAppSender
) -> None:
    assert await sender.send(in_window(template="nothing")) == Permanent("no template: nothing")
    assert graph.sent == []


async def test_the_consent_request_buttons_carry_the_sponsorship(
    graph: FakeGraphServer, sender: WhatsAppSender
) -> None:
    params = {"worker": "Siti", "asn": "Budi Santoso", "program": "SERTAKAN", "sponsorship_id": 41}
    await sender.send(notice(kind="consent_request", template="consent_request", params=params))
    [message] = graph.messages_to(WA_ID)
    assert message.template_params == ["Siti", "Budi Santoso", "SERTAKAN"]
    assert message.template_payloads == ["consent:yes:41", "consent:no:41"]


async def test_a_parameter_with_line_breaks_is_accepted(
    graph: FakeGraphServer, sender: WhatsAppSender
) -> None:
    params = {"name": "Siti", "reason": "Nama tidak\nsesuai\tKTP"}
    result = await sender.send(
        notice(kind="returned", template="enrollment_returned", params=params)
    )
    assert isinstance(result, Sent)
    assert graph.messages_to(WA_ID)[0].template_params == ["Siti", "Nama tidak sesuai KTP"]


async def test_a_missing_parameter_fails_the_row_with_its_name(
    graph: FakeGraphServer, sender: WhatsAppSender
) -> None:
    result = await sender.send(notice(params={"name": "Siti", "opd": "Dinas Sosial"}))
    assert result == Permanent("template card_ready_worker: parameter 'kpj' missing")


async def test_a_long_body_is_split_and_spaced_for_the_pair_limit(
    graph: FakeGraphServer, sender: WhatsAppSender, sleeps: Sleeps
) -> None:
    graph.open_window(WA_ID)
    digest = "\n".join(f"{n:03d} " + "x" * 95 for n in range(60))  # 5,999 characters
    long_notice = in_window(kind="digest", body=digest, template="pic_digest")
    assert sender.message_count(long_notice) == 2
    assert sender.message_count(notice(body=digest)) == 1  # a template is one message

    result = await sender.send(long_notice)

    parts = graph.messages_to(WA_ID)
    assert "\n".join(part.text for part in parts) == digest
    assert len(parts) == 2 and sleeps.slept == [6.0]
    assert result == Sent(provider_message_id=parts[-1].id)


def test_the_window_is_judged_by_the_clock_at_send_time(
    wa_client: WhatsAppClient, book: TemplateBook
) -> None:
    clock = FrozenClock(NOW)
    sender = WhatsAppSender(wa_client, book, clock=clock)
    recent = notice(last_inbound_at=NOW - timedelta(hours=23, minutes=59))
    assert sender.window_open(recent)
    clock.advance(timedelta(minutes=1))
    assert not sender.window_open(recent)


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (130429, RetryAfter(5.0, error="130429: (#130429) Rate limit hit (Cloud API message "
                                      "throughput has been reached.)")),
        (131056, Deferred(6.0, error="131056: (#131056) (Business Account, Consumer Account) "
                                    "pair rate limit hit (Message failed to send because there "
                                    "were too many messages sent from this phone number to the "
                                    "same phone number in a short period of time.)")),
        (131026, Permanent("131026: (#131026) Message undeliverable (Unable to deliver message. "
                           "Reasons can include: The recipient phone number is not a WhatsApp "
                           "phone number.)", recipient_gone=True)),
        (131000, Transient("131000: (#131000) Something went wrong (Message failed to send due "
                           "to an unknown error.)")),
        (131016, Transient("131016: (#131016) Service unavailable (A service is temporarily "
                           "unavailable.)")),
        (132001, Permanent("132001: (#132001) Template name does not exist in the translation "
                           "(template name does not exist in the translation)")),
    ],
)  # fmt: skip
async def test_graph_errors_become_outcomes(
    graph: FakeGraphServer, sender: WhatsAppSender, code: int, expected: object
) -> None:
    graph.fail_next(code, recipient=WA_ID)
    assert await sender.send(notice()) == expected
    assert graph.sent == []


async def test_the_pauses_are_configurable(
    graph: FakeGraphServer, wa_client: WhatsAppClient, book: TemplateBook
) -> None:
    sender = WhatsAppSender(
        wa_client, book, clock=FrozenClock(NOW), rate_limit_pause_s=2.0, pair_retry_s=7.5
    )
    graph.fail_next(130429)
    graph.fail_next(131056)
    first, second = await sender.send(notice()), await sender.send(notice())
    assert isinstance(first, RetryAfter) and first.seconds == 2.0
    assert isinstance(second, Deferred) and second.seconds == 7.5


async def test_an_error_on_the_free_text_is_classified_like_any_other(
    graph: FakeGraphServer, sender: WhatsAppSender
) -> None:
    graph.open_window(WA_ID)
    graph.fail_next(131056, recipient=WA_ID)
    assert isinstance(await sender.send(in_window()), Deferred)
    assert graph.sent == []


async def test_a_lost_connection_is_transient(
    graph: FakeGraphServer, sender: WhatsAppSender
) -> None:
    graph.drop_next()
    result = await sender.send(notice())
    assert isinstance(result, Transient)
    assert graph.sent == []


async def test_a_rejected_token_is_transient_and_never_quoted(
    graph: FakeGraphServer, book: TemplateBook
) -> None:
    wrong = build_client(graph.settings(access_token="EAAGwrong-token"))
    try:
        result = await WhatsAppSender(wrong, book, clock=FrozenClock(NOW)).send(notice())
    finally:
        await wrong.close()
    assert isinstance(result, Transient)
    assert result.error.startswith("190: ")
    assert "EAAG" not in result.error


async def test_a_server_that_cannot_be_reached_is_transient(book: TemplateBook) -> None:
    async with FakeGraphServer() as gone:
        settings = gone.settings()
    unreachable = build_client(settings)
    try:
        result = await WhatsAppSender(unreachable, book, clock=FrozenClock(NOW)).send(notice())
    finally:
        await unreachable.close()
    assert result == Transient("ConnectError")


async def test_an_answer_slower_than_the_read_timeout_is_a_transient_timeout(
    graph: FakeGraphServer, book: TemplateBook
) -> None:
    graph.answer_delay_s = 1.0
    slow = build_client(graph.settings(), timeout=httpx.Timeout(5.0, read=0.2))
    try:
        result = await WhatsAppSender(slow, book, clock=FrozenClock(NOW)).send(notice())
    finally:
        await slow.close()
    assert result == Transient("timeout")
    assert len(graph.sent) == 1  # judged and accepted; the answer came too late


async def test_many_sends_at_once_share_the_clients_connections(
    graph: FakeGraphServer, book: TemplateBook
) -> None:
    graph.answer_delay_s = 0.05
    few = build_client(graph.settings(), limits=httpx.Limits(max_connections=3))
    try:
        sender = WhatsAppSender(few, book, clock=FrozenClock(NOW))
        results = await asyncio.gather(
            *(sender.send(notice(recipient=f"62812000000{n:02d}")) for n in range(12))
        )
    finally:
        await few.close()
    assert all(isinstance(result, Sent) for result in results)
    assert len({result.provider_message_id for result in results if isinstance(result, Sent)}) == 12
    assert sorted(message.to for message in graph.sent) == [
        f"62812000000{n:02d}" for n in range(12)
    ]


async def test_a_recipient_that_is_not_a_wa_id_fails_without_a_call(
    graph: FakeGraphServer, sender: WhatsAppSender
) -> None:
    assert await sender.send(notice(recipient="+62 812")) == Permanent(
        "recipient is not a WhatsApp id"
    )
    assert graph.calls == []


async def test_the_client_talks_to_the_configured_base_and_version(
    graph: FakeGraphServer, sender: WhatsAppSender
) -> None:
    await sender.send(notice())
    assert [call.path for call in graph.calls] == [f"/v24.0/{graph.phone_number_id}/messages"]


async def test_inbound_media_is_fetched_within_the_size_limit(
    graph: FakeGraphServer, wa_client: WhatsAppClient
) -> None:
    photo = graph.add_media(b"\xff\xd8" + b"x" * 998, "image/jpeg")
    assert await wa_client.fetch_media(photo, max_bytes=1000) == b"\xff\xd8" + b"x" * 998
    assert await wa_client.fetch_media(photo, max_bytes=999) is None
    downloads = [call for call in graph.calls if call.path.startswith("/download/")]
    assert len(downloads) == 1  # the declared size was enough to refuse the second
