"""The engine's promises: global words, drafts, restarts, replays, ordering, bad input."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.vocabulary import Channel, Language
from handlers.flows.enrollment import SummaryStep
from handlers.types import EventKind, InboundEvent
from storage.models import ChannelAccount, ProcessedUpdate, Sponsorship
from tests.fakes.chat import WORKER_NIK, Chat, build_engine, seed_opds
from tests.fakes.clock import FrozenClock
from tests.handlers.conftest import to_nik_step


@pytest.fixture
def chat(asn: Chat) -> Chat:
    """A registered ASN."""
    return asn


async def test_five_thousand_character_message_is_refused_and_question_repeated(
    chat: Chat,
) -> None:
    await to_nik_step(chat)
    question = chat.question.text
    await chat.say("7" * 5000)
    assert "terlalu panjang (5.000 karakter)" in chat.replies[0].text
    assert chat.question.text == question


async def test_unknown_command_names_it_and_repeats_question(chat: Chat) -> None:
    await to_nik_step(chat)
    question = chat.question.text
    await chat.say("/hapusdata")
    assert "Perintah /hapusdata tidak dikenal" in chat.replies[0].text
    assert chat.question.text == question


async def test_stale_button_from_an_old_message(chat: Chat) -> None:
    await chat.say("/daftar")
    old_options = chat.options
    await chat.press("Anggota keluarga")
    await chat.press("Sopir")
    await chat.say("Joko Widodo")
    question = chat.question.text
    await chat.press_id(old_options[0].id)  # the first relationship, from the first question
    assert "dari pertanyaan sebelumnya" in chat.replies[0].text
    assert chat.question.text == question


async def test_a_message_that_arrived_out_of_order_is_not_taken_as_the_answer(
    chat: Chat,
) -> None:
    """WhatsApp: sent before an answer already applied, it would answer the wrong question."""
    await to_nik_step(chat)
    question = chat.question.text
    await chat.say(WORKER_NIK, out_of_order=True)
    assert "sampai belakangan" in chat.replies[0].text
    assert "KEMBALI" in chat.replies[0].text
    assert chat.question.text == question
    await chat.say(WORKER_NIK)  # the same answer, in order, is taken
    assert chat.question.text != question


async def test_unsupported_and_file_input_repeat_the_question(chat: Chat) -> None:
    await to_nik_step(chat)
    question = chat.question.text
    await chat._send(kind=EventKind.UNSUPPORTED)
    assert "hanya bisa membaca teks" in chat.replies[0].text
    assert chat.question.text == question
    await chat._send(kind=EventKind.PHOTO, file_ref="AgAC-photo")
    assert "belum diperlukan" in chat.replies[0].text
    assert chat.question.text == question


async def test_help_explains_the_current_step(chat: Chat) -> None:
    await to_nik_step(chat)
    question = chat.question.text
    await chat.say("bantuan")
    assert "16 angka di KTP atau Kartu Keluarga" in chat.replies[0].text
    assert chat.question.text == question


async def test_back_returns_to_previous_step_keeping_answers(chat: Chat) -> None:
    await to_nik_step(chat)
    await chat.say("kembali")
    assert "nama lengkap pekerja" in chat.question.text
    await chat.say("Siti Aminah Binti Ahmad")
    assert "NIK Siti Aminah Binti Ahmad" in chat.question.text


async def test_back_at_first_step_says_so(chat: Chat) -> None:
    await chat.say("/daftar")
    question = chat.question.text
    await chat.say("kembali")
    assert "langkah pertama" in chat.replies[0].text
    assert chat.question.text == question


async def test_cancel_keeps_a_draft_that_resumes_at_the_same_step(chat: Chat) -> None:
    await to_nik_step(chat)
    await chat.say(WORKER_NIK)
    await chat.say("batal")
    assert "disimpan sebagai draf" in chat.replies[0].text
    # The way on is offered right there (issue 12 item 13), not only in the menu.
    await chat.press("Lanjutkan")
    assert "Melanjutkan pendaftaran pekerja" in chat.replies[0].text
    assert "7 Agustus 1990" in chat.question.text  # birth date step, NIK kept


async def test_menu_mid_flow_then_restart_flow_offers_draft(chat: Chat) -> None:
    await to_nik_step(chat)
    await chat.say("menu")
    await chat.say("/daftar")
    assert "draf pendaftaran pekerja" in chat.question.text
    await chat.press("Mulai dari awal")
    assert "Apa hubungan orang" in chat.question.text


async def test_idle_flow_is_offered_for_resumption(chat: Chat) -> None:
    await to_nik_step(chat)
    chat.clock.advance(timedelta(hours=5))
    await chat.say("halo")
    assert "belum selesai" in chat.question.text
    await chat.press("Lanjutkan")
    assert "NIK Siti Aminah" in chat.question.text


async def test_restart_resumes_at_the_same_step(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """A new engine (a new process) on the same database continues the conversation."""
    clock = FrozenClock()
    await seed_opds(sessionmaker, clock)
    first = Chat(build_engine(sessionmaker, clock), clock)
    await first.register()
    await to_nik_step(first)
    await first.say(WORKER_NIK)
    await first.press("Ya, benar")
    await first.say("Bogor")

    second = Chat(build_engine(sessionmaker, clock), clock)  # fresh engine, no memory
    second.options = first.options
    await second.say("081298765432")
    assert "alamat tempat tinggal" in second.question.text
    await second.say("Jl. Melati No. 5 RT 02/RW 01")
    await second.say("Sukamaju")
    await second.say("Ciawi")
    await second.say("Kabupaten Bogor")
    await second.press("Bulanan")
    await second.press("Desember 2026")
    assert "Siti Aminah" in second.question.text
    await second.press("Kirim ke PIC")
    async with sessionmaker() as session:
        assert (await session.execute(select(func.count(Sponsorship.id)))).scalar_one() == 1


async def test_replayed_update_has_one_effect(
    chat: Chat, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await chat.enroll_until_summary()
    await chat.press("Kirim ke PIC")
    assert "Pendaftaran Siti Aminah sudah masuk" in chat.text
    assert await chat.replay() == []
    async with sessionmaker() as session:
        assert (await session.execute(select(func.count(Sponsorship.id)))).scalar_one() == 1


async def test_concurrent_updates_of_one_user_apply_in_order(
    chat: Chat, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await to_nik_step(chat)
    events = [
        InboundEvent(
            channel=Channel.TELEGRAM,
            sender_id=chat.sender,
            update_id=f"burst-{i}",
            kind=EventKind.TEXT,
            text=answer,
            received_at=chat.clock(),
        )
        for i, answer in enumerate([WORKER_NIK, "17-08-1990"])
    ]
    results = await asyncio.gather(*(chat.engine.handle(e) for e in events))
    # NIK first, then the typed date compared with the NIK's date: only in this order
    # does the mismatch question appear.
    assert "berbeda dengan tanggal di NIK" in results[1][-1].text
    async with sessionmaker() as session:
        step = (await session.execute(text("SELECT step FROM conversation"))).scalar_one()
    assert step == "birth_date_mismatch"


async def test_same_update_twice_at_once_applies_once(
    chat: Chat, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await chat.enroll_until_summary()
    confirm = next(o for o in chat.options if "Kirim" in o.label)
    event = InboundEvent(
        channel=Channel.TELEGRAM,
        sender_id=chat.sender,
        update_id="dup-1",
        kind=EventKind.CHOICE,
        choice_id=confirm.id,
        received_at=chat.clock(),
    )
    results = await asyncio.gather(chat.engine.handle(event), chat.engine.handle(event))
    assert sorted(len(r) for r in results)[0] == 0
    async with sessionmaker() as session:
        assert (await session.execute(select(func.count(Sponsorship.id)))).scalar_one() == 1
        assert (
            await session.execute(
                select(func.count(ProcessedUpdate.id)).where(ProcessedUpdate.update_id == "dup-1")
            )
        ).scalar_one() == 1


async def test_language_switch_to_english(
    chat: Chat, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await chat.say("/bahasa")
    await chat.press("English")
    assert "Language changed to English" in chat.replies[0].text
    assert "Enroll a worker" in " ".join(chat.labels())
    async with sessionmaker() as session:
        account = (await session.execute(select(ChannelAccount))).scalar_one()
    assert account.language is Language.ENGLISH
    await chat.say("/info")
    await chat.press("Dues")
    assert "Rp16.800" in chat.replies[0].text and "Rp50.400" in chat.replies[0].text


async def test_info_pages_come_from_catalogue(chat: Chat) -> None:
    await chat.say("info")
    await chat.press("Manfaat")
    assert "Rp42 juta" in chat.replies[0].text
    assert "Rp174 juta" in chat.replies[0].text
    await chat.press("Iuran")
    assert "Rp16.800" in chat.replies[0].text


async def test_free_text_outside_a_flow_shows_the_menu(chat: Chat) -> None:
    await chat.say("selamat pagi")
    assert chat.question.text.startswith("Menu utama")


async def test_new_user_with_english_client_gets_english(guest: Chat) -> None:
    await guest.say("/start", language_hint="en-GB")
    assert guest.question.text.startswith("Main menu")
    assert "Register as ASN" in " ".join(guest.labels())


async def test_pressing_the_current_question_after_a_pause_continues(chat: Chat) -> None:
    await chat.say("/daftar")
    chat.clock.advance(timedelta(hours=5))
    await chat.press("Anggota keluarga")  # a button of the question still on screen
    assert "Apa pekerjaan orang itu" in chat.question.text


# --- stepcost: a step that gives its options alone (the summary) ---------------------


class CountingAsk:
    """`SummaryStep.ask`, counted while the test runs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = SummaryStep.ask

        async def ask(step: SummaryStep, ctx: Any) -> Any:
            self.calls += 1
            return await original(step, ctx)

        monkeypatch.setattr(SummaryStep, "ask", ask)


async def test_the_summary_is_rendered_only_to_ask_again(
    asn: Chat, monkeypatch: pytest.MonkeyPatch
) -> None:
    await asn.enroll_until_summary()
    summary = asn.question.text
    assert "Kirim ke PIC" in " ".join(asn.labels())
    stale = asn.options[0].id
    counting = CountingAsk(monkeypatch)

    # Answers that are not an option get the notice and the whole summary again.
    await asn.say("halo")
    assert "tidak ada di pilihan" in asn.replies[0].text
    assert asn.question.text == summary
    await asn.press_id("0:" + stale.split(":", 1)[1])  # a button of an older question
    assert "dari pertanyaan sebelumnya" in asn.replies[0].text
    assert asn.question.text == summary
    assert counting.calls == 2

    # An option, pressed or typed by its number, is read without rendering the summary.
    await asn.say("1")
    assert "Dinas Kesehatan belum punya PIC" in asn.text
    assert counting.calls == 2
