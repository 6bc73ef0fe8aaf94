"""The engine's replies on WhatsApp: rendering, then delivery over HTTP to the fake Graph API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from bot.delivery import DeliverySettings, ReplyDelivery
from bot.whatsapp.client import WhatsAppClient
from bot.whatsapp.render import (
    ButtonsMessage,
    DocumentMessage,
    ListMessage,
    ListRow,
    TextMessage,
    WhatsAppReplies,
    render_replies,
)
from domain.vocabulary import Language
from handlers.i18n import Catalogs, Translator
from handlers.splitting import split_tail, split_text, utf16_length
from handlers.types import Document, Option, QueuedReplies, Reply
from tests.fakes.clock import FrozenClock
from tests.fakes.graph_api import FakeGraphServer

WA_ID = "6281234567890"

#: The channel's catalogue texts (the lead adds them to the .po files; until then, here).
WHATSAPP_TEXTS = {
    Language.INDONESIAN: {
        "whatsapp.list_button": "Pilih",
        "whatsapp.choose_number": "Balas dengan nomor pilihan.",
    },
    Language.ENGLISH: {
        "whatsapp.list_button": "Choose",
        "whatsapp.choose_number": "Reply with the number of your choice.",
    },
}


def catalogs() -> Catalogs:
    loaded = Catalogs()
    for language, texts in WHATSAPP_TEXTS.items():
        for key, text in texts.items():
            loaded.messages(language).setdefault(key, text)
    return loaded


@pytest.fixture(scope="module")
def t() -> Translator:
    return catalogs().translator(Language.INDONESIAN)


def options(*labels: str) -> tuple[Option, ...]:
    return tuple(Option(f"3:k{n}", label) for n, label in enumerate(labels))


# --- rendering ---------------------------------------------------------------------------


def test_up_to_three_short_options_are_reply_buttons(t: Translator) -> None:
    reply = Reply("Setuju?", options("Ya", "Tidak", "Batal"))
    assert render_replies([reply], t) == [
        ButtonsMessage("Setuju?", (("3:k0", "Ya"), ("3:k1", "Tidak"), ("3:k2", "Batal")))
    ]


def test_four_options_or_a_label_over_20_characters_make_a_list(t: Translator) -> None:
    four = Reply("Pilih rencana", options("Bulanan", "Triwulan", "Potong gaji", "Batal"))
    [listed] = render_replies([four], t)
    assert listed == ListMessage(
        "Pilih rencana",
        "Pilih",
        "Pilih",
        tuple(ListRow(f"3:k{n}", label) for n, label in enumerate(
            ("Bulanan", "Triwulan", "Potong gaji", "Batal")
        )),
    )  # fmt: skip
    long_label = Reply("Hubungan?", options("Asisten rumah tangga", "Keluarga"))  # 20: fits
    assert isinstance(render_replies([long_label], t)[0], ButtonsMessage)
    longer = Reply("Hubungan?", options("Pekerja tempat ibadah", "Keluarga"))  # 21
    assert isinstance(render_replies([longer], t)[0], ListMessage)


def test_a_row_title_over_24_characters_is_cut_and_the_label_shown_whole(t: Translator) -> None:
    label = "Dinas Pendidikan dan Kebudayaan"
    [listed] = render_replies([Reply("OPD?", options(label, "Lainnya"))], t)
    assert isinstance(listed, ListMessage)
    first = listed.rows[0]
    assert len(first.title) <= 24 and first.title.endswith("…")
    assert first.description == label
    assert listed.rows[1] == ListRow("3:k1", "Lainnya")


def test_a_label_with_a_detail_shows_its_head_as_the_title_and_the_detail_below(
    t: Translator,
) -> None:
    """Issue 12 item 22: "📅 Bulanan – Rp16.800/bu…" was cut mid-word."""
    plans = [
        t(f"plan.option.{plan}", amount=t.money(amount))
        for plan, amount in (("monthly", 16800), ("quarterly", 50400), ("payroll_deduction", 16800))
    ]
    [listed] = render_replies([Reply("Cara bayar?", options(*plans))], t)
    assert isinstance(listed, ListMessage)
    assert [(row.title, row.description) for row in listed.rows] == [
        ("📅 Bulanan", "Rp16.800/bulan"),
        ("🗓️ Tiga bulanan", "Rp50.400/3 bulan"),
        ("🏦 Potong gaji", "Rp16.800/bulan"),
    ]
    people = ["Siti Aminah (NIK 3201********0001)", "Joko Susilo – KPJ 90000000001"]
    [listed] = render_replies([Reply("Siapa?", options(*people))], t)
    assert isinstance(listed, ListMessage)
    assert [(row.title, row.description) for row in listed.rows] == [
        ("Siti Aminah", "(NIK 3201********0001)"),
        ("Joko Susilo", "KPJ 90000000001"),
    ]


def test_a_label_without_a_detail_is_cut_after_a_word_and_shown_whole_below(
    t: Translator,
) -> None:
    labels = ("Dinas Tenaga Kerja dan Transmigrasi", "Marbot / pengurus rumah ibadah", "Lainnya")
    [listed] = render_replies([Reply("Yang mana?", options(*labels))], t)
    assert isinstance(listed, ListMessage)
    assert [(row.title, row.description) for row in listed.rows] == [
        ("Dinas Tenaga Kerja dan…", labels[0]),
        ("Marbot / pengurus rumah…", labels[1]),
        ("Lainnya", None),
    ]


def test_titles_are_counted_in_utf16_units_an_emoji_counting_two(t: Translator) -> None:
    """ "📅 Ubah tanggal lahir" is 20 characters but 21 units: Meta refuses it on a button."""
    labels = ("✏️ Ubah NIK", "📅 Ubah tanggal lahir", "❌ Batalkan")
    [buttons] = render_replies([Reply("Umur di luar batas.", options(*labels))], t)
    assert isinstance(buttons, ButtonsMessage)
    assert [title for _, title in buttons.buttons] == [
        "✏️ Ubah NIK",
        "Ubah tanggal lahir",
        "❌ Batalkan",
    ]
    assert all(utf16_length(title) <= 20 for _, title in buttons.buttons)
    rows = ("📤 Ekspor berkas kolektif", "🔎 Periksa pendaftaran (12)", "📥 Impor KPJ", "⏰ Lewat")
    [listed] = render_replies([Reply("Menu PIC", options(*rows))], t)
    assert isinstance(listed, ListMessage)
    assert [(row.title, row.description) for row in listed.rows[:3]] == [
        ("Ekspor berkas kolektif", None),  # 25 units with its emoji
        ("🔎 Periksa pendaftaran", "(12)"),  # 27 units whole
        ("📥 Impor KPJ", None),
    ]


def test_a_lone_option_is_a_button_saying_the_rest_in_the_body(t: Translator) -> None:
    [button] = render_replies([Reply("Nomor HP pekerja?", options("⏭️ Lewati (tidak punya HP)"))], t)
    assert button == ButtonsMessage(
        "Nomor HP pekerja?\n\n⏭️ Lewati (tidak punya HP)", (("3:k0", "⏭️ Lewati"),)
    )
    [button] = render_replies([Reply("Ketemu satu OPD.", options("Dinas Kesehatan"))], t)
    assert button == ButtonsMessage("Ketemu satu OPD.", (("3:k0", "Dinas Kesehatan"),))
    long_name = "Dinas Pendidikan dan Kebudayaan"
    [button] = render_replies([Reply("Ketemu satu OPD.", options(long_name))], t)
    assert button == ButtonsMessage(
        f"Ketemu satu OPD.\n\n{long_name}", (("3:k0", "Dinas Pendidikan…"),)
    )


def test_same_titles_cannot_be_buttons(t: Translator) -> None:
    [listed] = render_replies([Reply("Yang mana?", options("Siti", "Siti"))], t)
    assert isinstance(listed, ListMessage)


def test_more_than_ten_options_or_very_long_labels_are_numbered_text(t: Translator) -> None:
    eleven = [f"Desa {n}" for n in range(1, 12)]
    [numbered] = render_replies([Reply("Desa?", options(*eleven))], t)
    assert numbered == TextMessage(
        "Desa?\n\n" + "\n".join(f"{n}. Desa {n}" for n in range(1, 12))
        + "\n\nBalas dengan nomor pilihan."
    )  # fmt: skip
    huge = "Dinas Pemberdayaan Perempuan, Perlindungan Anak, Pengendalian Penduduk dan KB"
    [text] = render_replies([Reply("OPD?", options(huge, "Lainnya"))], t)
    assert isinstance(text, TextMessage)
    assert f"1. {huge}\n2. Lainnya" in text.text


def test_the_hint_comes_from_the_recipients_catalogue() -> None:
    english = catalogs().translator(Language.ENGLISH)
    [text] = render_replies([Reply("Village?", options(*(str(n) for n in range(12))))], english)
    assert isinstance(text, TextMessage)
    assert text.text.endswith("\n\nReply with the number of your choice.")
    [listed] = render_replies([Reply("Plan?", options("a", "b", "c", "d"))], english)
    assert isinstance(listed, ListMessage) and listed.button == "Choose"


def test_a_contact_request_is_plain_text(t: Translator) -> None:
    reply = Reply("Nomor HP Anda?", request_contact=True)
    assert render_replies([reply], t) == [TextMessage("Nomor HP Anda?")]


def test_long_texts_are_split_and_an_interactive_body_keeps_to_1024(t: Translator) -> None:
    paragraph = "\n".join(f"{n:03d} " + " ".join(["kata"] * 15) for n in range(120))  # 9,480
    plain = render_replies([Reply(paragraph)], t)
    assert len(plain) == 3 and all(isinstance(m, TextMessage) for m in plain)
    assert all(utf16_length(m.text) <= 4096 for m in plain if isinstance(m, TextMessage))
    assert "\n".join(m.text for m in plain if isinstance(m, TextMessage)) == paragraph

    with_buttons = render_replies([Reply(paragraph, options("Ya", "Tidak"))], t)
    *head, last = with_buttons
    assert isinstance(last, ButtonsMessage) and utf16_length(last.text) <= 1024
    texts = [m.text for m in head if isinstance(m, TextMessage)]
    assert len(texts) == len(head) and all(utf16_length(text) <= 4096 for text in texts)
    assert "\n".join([*texts, last.text]) == paragraph


def test_a_single_long_line_before_buttons_is_cut_not_lost(t: Translator) -> None:
    line = "kata " * 400  # 2,000 characters, no line break
    *head, last = render_replies([Reply(line, options("Ya", "Tidak"))], t)
    assert isinstance(last, ButtonsMessage)
    assert utf16_length(last.text) <= 1024
    assert "".join(m.text for m in head if isinstance(m, TextMessage)) + last.text == line.rstrip()


def test_emoji_count_twice_towards_the_limit() -> None:
    assert split_text("🎉" * 3000, 4096) == ["🎉" * 2048, "🎉" * 952]
    assert split_tail("ab\n" + "🎉" * 511, 1024, 4096) == (["ab"], "🎉" * 511)
    assert split_tail("a\n" + "🎉" * 600, 1024, 4096) == (["a", "🎉" * 512], "🎉" * 88)


def test_a_document_goes_first_with_the_text_as_caption_when_it_fits(t: Translator) -> None:
    xlsx = Document("kolektif.xlsx", b"PK\x03\x04", "application/vnd.ms-excel")
    assert render_replies([Reply("File kolektif", document=xlsx)], t) == [
        DocumentMessage(xlsx, "File kolektif")
    ]
    with_options = render_replies(
        [Reply("Sudah dikirim?", options("Ya", "Belum"), document=xlsx)], t
    )
    assert with_options == [
        DocumentMessage(xlsx),
        ButtonsMessage("Sudah dikirim?", (("3:k0", "Ya"), ("3:k1", "Belum"))),
    ]


def test_empty_texts_are_not_sent(t: Translator) -> None:
    assert render_replies([Reply("  "), Reply("Halo")], t) == [TextMessage("Halo")]


# --- delivery over HTTP --------------------------------------------------------------------


@pytest.fixture
async def graph() -> AsyncIterator[FakeGraphServer]:
    async with FakeGraphServer() as fake:
        fake.open_window(WA_ID)
        yield fake


async def deliver(client: WhatsAppClient, replies: list[Reply]) -> None:
    """Send `replies` to WA_ID as the conversation does (bot/delivery.py, retries in ms)."""
    delivery = ReplyDelivery(
        WhatsAppReplies(client, catalogs(), rate_limit_pause_s=0.01, pair_retry_s=0.01),
        database=None,
        cipher=None,
        clock=FrozenClock(),
        settings=DeliverySettings(retry_first=timedelta(milliseconds=10)),
    )
    delivery.submit(WA_ID, QueuedReplies(replies, Language.INDONESIAN), "wamid.test")
    await asyncio.wait_for(delivery.drain(), 10)


async def test_replies_arrive_in_order_as_the_platform_accepts_them(
    graph: FakeGraphServer, wa_client: WhatsAppClient
) -> None:
    replies = [
        Reply("Data tersimpan."),
        Reply("Lanjut?", options("Ya", "Tidak")),
        Reply("Pilih rencana", options("Bulanan", "Triwulan", "Potong gaji", "Batal")),
        Reply("Desa?", options(*(f"Desa {n}" for n in range(1, 12)))),
    ]
    await deliver(wa_client, replies)

    sent = graph.messages_to(WA_ID)
    assert [(m.type, m.interactive_type) for m in sent] == [
        ("text", None),
        ("interactive", "button"),
        ("interactive", "list"),
        ("text", None),
    ]
    assert sent[0].text == "Data tersimpan."
    assert sent[1].choices == [("3:k0", "Ya"), ("3:k1", "Tidak")]
    assert sent[2].payload["interactive"]["action"]["button"] == "Pilih"
    assert [key for key, _ in sent[2].choices] == ["3:k0", "3:k1", "3:k2", "3:k3"]
    assert sent[3].text.startswith("Desa?\n\n1. Desa 1\n")
    assert graph.errors == {}


async def test_a_document_is_uploaded_then_sent_with_its_caption(
    graph: FakeGraphServer, wa_client: WhatsAppClient
) -> None:
    content = b"PK\x03\x04 collective file"
    xlsx = Document("DINSOS-2026-001.xlsx", content)  # octet-stream: typed by its name
    await deliver(wa_client, [Reply("File kolektif", document=xlsx)])
    [message] = graph.messages_to(WA_ID)
    assert message.type == "document"
    document = message.payload["document"]
    assert (document["filename"], document["caption"]) == ("DINSOS-2026-001.xlsx", "File kolektif")
    stored = graph.media[document["id"]]
    assert stored.content == content
    assert stored.mime_type == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


async def test_a_rate_limited_reply_is_sent_again_in_order(
    graph: FakeGraphServer, wa_client: WhatsAppClient
) -> None:
    graph.fail_next(131056, recipient=WA_ID)
    await deliver(wa_client, [Reply("Satu"), Reply("Dua")])
    assert [m.text for m in graph.messages_to(WA_ID)] == ["Satu", "Dua"]
    assert graph.errors[131056] == 1


async def test_an_undeliverable_number_stops_the_rest_and_nothing_raises(
    graph: FakeGraphServer, wa_client: WhatsAppClient
) -> None:
    graph.fail_next(131026, recipient=WA_ID)
    await deliver(wa_client, [Reply("Satu"), Reply("Dua")])
    assert graph.messages_to(WA_ID) == []
    assert len(graph.calls_to("/messages")) == 1


async def test_a_dropped_connection_and_131000_are_retried_without_losing_a_message(
    graph: FakeGraphServer, wa_client: WhatsAppClient
) -> None:
    graph.drop_next()
    graph.fail_next(131000)
    await deliver(wa_client, [Reply("Satu"), Reply("Dua"), Reply("Tiga")])
    assert [m.text for m in graph.messages_to(WA_ID)] == ["Satu", "Dua", "Tiga"]
