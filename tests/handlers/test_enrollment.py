"""PRODUCT 4.2 through the real engine and database: enrolling a worker and its bad inputs."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.vocabulary import (
    ConsentPurpose,
    Occupation,
    PaymentPlan,
    Sex,
    SponsorshipStatus,
    WorkerConsent,
)
from storage.crypto import NikCipher
from storage.models import ConsentRecord, Sponsorship, Worker
from storage.repositories import SponsorshipRepository, WorkerRepository
from tests.fakes.chat import (
    OTHER_NIK,
    TEST_KEY,
    WORKER_NIK,
    Chat,
    build_engine,
    engine_config,
    seed_opds,
)
from tests.fakes.clock import FrozenClock
from tests.handlers.conftest import to_nik_step


@pytest.fixture
def chat(asn: Chat) -> Chat:
    """A registered ASN."""
    return asn


async def _sponsorships(sessionmaker: async_sessionmaker[AsyncSession]) -> list[Sponsorship]:
    async with sessionmaker() as session:
        return list((await session.execute(select(Sponsorship))).scalars().all())


async def test_enrollment_lands_in_database_encrypted(
    chat: Chat, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await chat.enroll_until_summary()
    summary = chat.question.text
    assert "3201********0001" in summary
    assert WORKER_NIK not in summary
    assert "Rp16.800" in summary
    # Shown as people write it; stored as E.164 (below).
    assert "0812-9876-5432" in summary and "+62" not in summary
    await chat.press("Kirim ke PIC")
    # Dinas Kesehatan has no PIC here: said plainly (issue 12 item 2).
    assert "Dinas Kesehatan belum punya PIC" in chat.text
    async with sessionmaker() as session:
        worker = (await session.execute(select(Worker))).scalar_one()
        sponsorship = (await session.execute(select(Sponsorship))).scalar_one()
    assert worker.full_name == "Siti Aminah"
    assert worker.sex is Sex.FEMALE
    assert worker.birth_date == date(1990, 8, 7)
    assert worker.phone_e164 == "+6281298765432"
    assert (worker.village, worker.district) == ("Sukamaju", "Ciawi")
    assert WORKER_NIK.encode() not in worker.nik_ciphertext
    assert NikCipher(TEST_KEY).decrypt(worker.nik_ciphertext) == WORKER_NIK
    assert worker.nik_hash == NikCipher(TEST_KEY).lookup_hash(WORKER_NIK)
    assert sponsorship.status is SponsorshipStatus.WAITING_FOR_PIC
    assert sponsorship.occupation is Occupation.HOUSEHOLD_ASSISTANT
    assert sponsorship.plan is PaymentPlan.MONTHLY
    assert sponsorship.first_month == date(2026, 12, 1)
    # Without WhatsApp the ASN got a Telegram consent link to forward: asked, pending.
    assert sponsorship.worker_consent is WorkerConsent.PENDING


async def test_draft_nik_is_not_stored_in_plain_text(
    chat: Chat, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await to_nik_step(chat)
    await chat.say(WORKER_NIK)
    async with sessionmaker() as session:
        raw = await session.execute(select(Worker))
        assert raw.first() is None
        rows = (
            await session.execute(__import__("sqlalchemy").text("SELECT data FROM conversation"))
        ).all()
    assert all(WORKER_NIK not in str(row[0]) for row in rows)
    assert any("3201********0001" in str(row[0]) for row in rows)


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("320101470890", "16 angka, yang Anda ketik 12 angka"),
        ("32010147089000012", "16 angka, yang Anda ketik 17 angka"),
        ("3201O14708900001", "hanya berisi angka"),
        ("3201013102900001", "tanggal itu tidak ada"),  # 31 February
        ("3201017508900001", "tanggal itu tidak ada"),  # day 75 (women's 35)
    ],
)
async def test_bad_nik_explains_and_asks_again(chat: Chat, typed: str, expected: str) -> None:
    await to_nik_step(chat)
    question = chat.question.text
    await chat.say(typed)
    assert expected in chat.replies[0].text
    assert chat.question.text == question  # same question, the name is still known


async def test_nik_birth_date_mismatch_asks_to_confirm(
    chat: Chat, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await to_nik_step(chat)
    await chat.say(WORKER_NIK)
    assert "7 Agustus 1990" in chat.question.text
    await chat.say("17-08-1990")
    assert "berbeda dengan tanggal di NIK" in chat.question.text
    await chat.press("Pakai 17 Agustus 1990")
    await chat.say("Bogor")
    await chat.say("lewati")
    await chat.say("Jl. Melati No. 5 RT 02/RW 01")
    await chat.say("Sukamaju")
    await chat.say("Ciawi")
    await chat.say("Kabupaten Bogor")
    await chat.press("Bulanan")
    await chat.press("Desember 2026")
    assert "17 Agustus 1990 (berbeda dengan NIK" in chat.question.text
    await chat.press("Kirim ke PIC")
    (sponsorship,) = await _sponsorships(sessionmaker)
    assert sponsorship.birth_date_differs_from_nik is True


#: Born 1 Jan 2015: 11 years old on the test clock's day.
CHILD_NIK = "3201010101150001"
#: Same birth date and sex as WORKER_NIK, another serial: the NIK Siti's was mistyped as.
SITI_REAL_NIK = "3201014708900002"
AGE_REFUSAL_OPTIONS = ["✏️ Ubah NIK", "📅 Ubah tanggal lahir", "❌ Batalkan"]


@pytest.mark.parametrize(
    ("nik", "expected"),
    [
        (CHILD_NIK, "berumur 11 tahun"),
        ("3201010101500001", "berumur 76 tahun"),  # born 1 Jan 1950
    ],
)
async def test_ineligible_nik_offers_only_what_can_succeed(
    chat: Chat, nik: str, expected: str
) -> None:
    """Issue 12.9: no "Ya, benar" for a date that is refused; fix NIK, fix date or cancel."""
    await to_nik_step(chat)
    await chat.say(nik)
    assert expected in chat.question.text
    assert "menurut NIK" in chat.question.text
    assert "15 sampai 65 tahun" in chat.question.text
    assert chat.labels() == AGE_REFUSAL_OPTIONS
    await chat.press("Ubah NIK")
    assert "NIK Siti Aminah" in chat.question.text
    await chat.say(OTHER_NIK)
    assert "1 Januari 1980" in chat.question.text  # the adult's date, offered
    await chat.press("Ya, benar")
    assert "tempat lahir" in chat.question.text  # then the phone


async def test_age_refusal_back_goes_before_the_refused_nik(chat: Chat) -> None:
    await to_nik_step(chat)
    await chat.say(CHILD_NIK)
    await chat.press("Ubah NIK")
    await chat.say("kembali")
    assert "nama lengkap pekerja" in chat.question.text  # not the refusal again


async def test_ineligible_nik_then_typed_birth_date_from_id_card(
    chat: Chat, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await to_nik_step(chat)
    await chat.say(CHILD_NIK)
    await chat.press("Ubah tanggal lahir")
    assert "Ketik tanggal lahir pekerja" in chat.question.text
    assert chat.question.options == ()  # the NIK's date would be refused: not offered
    await chat.say("01-01-1990")
    assert "berbeda dengan tanggal di NIK" in chat.question.text
    assert [label.startswith("Pakai tanggal NIK") for label in chat.labels()] == [False, False]
    await chat.press("Pakai 1 Januari 1990")
    assert "tempat lahir" in chat.question.text  # then the phone


async def test_ineligible_typed_birth_date_offers_the_same_ways_out(chat: Chat) -> None:
    await to_nik_step(chat)
    await chat.say(WORKER_NIK)
    await chat.say("01-01-2015")
    assert "berumur 11 tahun (lahir 1 Januari 2015, yang Anda ketik)" in chat.question.text
    assert chat.labels() == AGE_REFUSAL_OPTIONS
    await chat.press("Ubah tanggal lahir")
    assert "7 Agustus 1990" in chat.question.text
    await chat.press("Ya, benar")  # the NIK's date is eligible: this one succeeds
    assert "tempat lahir" in chat.question.text  # then the phone


async def test_age_refusal_cancel_keeps_nothing(
    chat: Chat, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await to_nik_step(chat)
    await chat.say(CHILD_NIK)
    await chat.press("Batalkan")
    assert "Pendaftaran dibatalkan" in chat.text
    assert "Daftarkan pekerja" in " ".join(chat.labels())  # back at the menu
    assert not any("Lanjutkan" in label for label in chat.labels())  # no draft kept
    async with sessionmaker() as session:
        assert (await session.execute(select(Worker))).first() is None


async def test_edit_nik_to_ineligible_then_fixed_returns_to_summary(chat: Chat) -> None:
    await chat.enroll_until_summary()
    await chat.press("Ubah data")
    await chat.press("NIK")
    await chat.say(CHILD_NIK)
    assert chat.labels() == AGE_REFUSAL_OPTIONS
    await chat.press("Ubah NIK")
    await chat.say(OTHER_NIK)
    await chat.press("Ya, benar")
    summary = chat.question.text
    assert "1771********0003" in summary
    assert "1 Januari 1980" in summary
    assert "Sukamaju" in summary


async def test_edit_nik_with_the_same_mask_reasks_birth_date_and_sex(chat: Chat) -> None:
    """A NIK changed to one masked alike ("3201********0001") carries another birth date/sex."""
    await chat.enroll_until_summary()
    await chat.press("Ubah data")
    await chat.press("NIK")
    await chat.say("3201010101800001")  # a man born 1 Jan 1980; Siti's mask
    assert "1 Januari 1980" in chat.question.text  # birth date asked again
    await chat.press("Ya, benar")
    summary = chat.question.text
    assert "1 Januari 1980" in summary
    assert "laki-laki" in summary
    assert "7 Agustus 1990" not in summary


async def _sponsored_elsewhere(chat: Chat) -> Chat:
    """Siti (WORKER_NIK) enrolled by `chat`; another ASN of another OPD, at her NIK question."""
    await chat.enroll_until_summary()
    await chat.press("Kirim ke PIC")
    other = Chat(chat.engine, chat.clock, sender="3003")
    await other.register(
        nip="199001152023211005",
        name="Ani Lestari",
        opd_query="pendidikan",
        opd_label="Dinas Pendidikan",
    )
    await to_nik_step(other)
    await other.say(WORKER_NIK)
    return other


async def test_duplicate_nik_with_another_sponsor_names_whom_to_contact(
    chat: Chat, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    other = await _sponsored_elsewhere(chat)
    question = other.question.text
    assert "NIK 3201********0001 sudah terdaftar" in question
    assert "sudah disponsori ASN lain melalui Dinas Kesehatan" in question
    # Nobody to contact there: said plainly, not "contact the PIC".
    assert "Dinas Kesehatan belum punya PIC" in question
    assert "NIK pekerja lain" not in question  # the old prompt that kept the first name
    assert other.labels() == ["✏️ Ketik ulang NIK", "👤 Pekerja lain", "❌ Batalkan"]
    assert len(await _sponsorships(sessionmaker)) == 1


async def test_duplicate_nik_then_another_worker_asks_everything_again(
    chat: Chat, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """Issue 12.3: another person's NIK never ends up under the first name."""
    other = await _sponsored_elsewhere(chat)
    await other.press("Pekerja lain")
    assert "nama lengkap pekerja" in other.question.text
    await other.say("Joko Susilo")
    assert "NIK Joko Susilo" in other.question.text
    await other.say(OTHER_NIK)
    assert "1 Januari 1980" in other.question.text  # birth date asked for the new NIK
    await other.press("Ya, benar")
    await other.say("Bogor")
    await other.press("Lewati")
    await other.say("Jl. Melati No. 5 RT 02/RW 01")
    await other.say("Pasar Baru")
    await other.say("Teluk Segara")
    await other.say("Kabupaten Bogor")
    await other.press("Bulanan")
    await other.press("Desember 2026")
    summary = other.question.text
    assert "Joko Susilo" in summary
    assert "1771********0003" in summary
    assert "1 Januari 1980" in summary
    assert "laki-laki" in summary
    for first in ("Siti Aminah", "3201", "7 Agustus 1990", "perempuan", "Sukamaju"):
        assert first not in summary
    await other.press("Kirim ke PIC")
    async with sessionmaker() as session:
        names = {
            w.full_name: (w.nik_masked, w.birth_date)
            for w in (await session.execute(select(Worker))).scalars()
        }
    assert names == {
        "Siti Aminah": ("3201********0001", date(1990, 8, 7)),
        "Joko Susilo": ("1771********0003", date(1980, 1, 1)),
    }


async def test_duplicate_nik_retyped_for_the_same_worker_keeps_the_name(
    chat: Chat, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    other = await _sponsored_elsewhere(chat)
    await other.press("Ketik ulang NIK")
    assert "NIK Siti Aminah" in other.question.text
    await other.say("kembali")
    assert "nama lengkap pekerja" in other.question.text  # back skips the refusal
    await other.say("Siti Aminah")
    await other.say(SITI_REAL_NIK)
    assert "7 Agustus 1990" in other.question.text
    await other.press("Ya, benar")
    await other.say("Bogor")
    await other.press("Lewati")
    await other.say("Jl. Melati No. 5 RT 02/RW 01")
    await other.say("Sukamaju")
    await other.say("Ciawi")
    await other.say("Kabupaten Bogor")
    await other.press("Bulanan")
    await other.press("Desember 2026")
    assert "Siti Aminah" in other.question.text
    assert "3201********0002" in other.question.text
    await other.press("Kirim ke PIC")
    assert len(await _sponsorships(sessionmaker)) == 2


async def test_duplicate_nik_cancel_keeps_nothing(
    chat: Chat, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    other = await _sponsored_elsewhere(chat)
    await other.press("Batalkan")
    assert "Pendaftaran dibatalkan" in other.text
    assert len(await _sponsorships(sessionmaker)) == 1


async def test_nik_taken_while_at_the_summary_offers_retype_back_to_the_summary(
    chat: Chat, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await chat.enroll_until_summary()
    other = Chat(chat.engine, chat.clock, sender="3003")
    await other.register(
        nip="199001152023211005",
        name="Ani Lestari",
        opd_query="pendidikan",
        opd_label="Dinas Pendidikan",
    )
    await other.enroll_until_summary()
    await other.press("Kirim ke PIC")
    await chat.press("Kirim ke PIC")
    assert "sudah disponsori ASN lain melalui Dinas Pendidikan" in chat.question.text
    await chat.press("Ketik ulang NIK")
    await chat.say(SITI_REAL_NIK)
    await chat.press("Ya, benar")
    assert "3201********0002" in chat.question.text
    assert "Sukamaju" in chat.question.text  # the summary, the other answers kept
    await chat.press("Kirim ke PIC")
    assert len(await _sponsorships(sessionmaker)) == 2


async def _second_asn_at_the_summary(chat: Chat) -> Chat:
    """`chat` and another ASN both at the summary with the same NIK (WORKER_NIK)."""
    await chat.enroll_until_summary()
    other = Chat(chat.engine, chat.clock, sender="3003")
    await other.register(
        nip="199001152023211005",
        name="Ani Lestari",
        opd_query="pendidikan",
        opd_label="Dinas Pendidikan",
    )
    await other.enroll_until_summary(name="Siti A.")
    return other


async def test_a_new_worker_written_meanwhile_by_another_asn_is_told_and_kept(
    chat: Chat, sessionmaker: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the summary's look-up cannot see (PostgreSQL, two processes): the other
    ASN's worker and enrollment committed between the look-up and the insert."""
    other = await _second_asn_at_the_summary(chat)
    await other.press("Kirim ke PIC")

    async def not_yet(self: object, nik: str) -> None:
        return None  # as the look-up saw it, just before the other commit

    monkeypatch.setattr(WorkerRepository, "id_by_nik", not_yet)
    await chat.press("Kirim ke PIC")
    assert "baru saja didaftarkan oleh ASN lain" in chat.text
    assert "Ubah data" in " ".join(chat.labels())  # still at the summary
    async with sessionmaker() as session:
        worker = (await session.execute(select(Worker))).scalar_one()
    assert worker.full_name == "Siti A."  # the other ASN's data, untouched
    assert len(await _sponsorships(sessionmaker)) == 1
    monkeypatch.undo()
    await chat.say("menu")  # the conversation goes on: its transaction was committed
    assert "Daftarkan pekerja" in " ".join(chat.labels())


async def test_a_known_worker_enrolled_meanwhile_keeps_their_data(
    chat: Chat, sessionmaker: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker is known (the other ASN's enrollment wrote them), and that enrollment
    was not seen open by the summary's check (committed just after it): the insert
    is refused, and the refresh of the worker's data is undone with it."""
    other = await _second_asn_at_the_summary(chat)
    await other.press("Kirim ke PIC")

    async def none_open(self: object, worker_id: int) -> None:
        return None  # as the check saw it, just before the other commit

    monkeypatch.setattr(SponsorshipRepository, "open_for_worker", none_open)
    await chat.press("Kirim ke PIC")
    assert "baru saja didaftarkan oleh ASN lain" in chat.text
    async with sessionmaker() as session:
        worker = (await session.execute(select(Worker))).scalar_one()
    assert worker.full_name == "Siti A."
    assert len(await _sponsorships(sessionmaker)) == 1


async def test_same_asn_enrolling_same_nik_twice_is_told(chat: Chat) -> None:
    await chat.enroll_until_summary()
    await chat.press("Kirim ke PIC")
    await to_nik_step(chat)
    await chat.say(WORKER_NIK)
    assert "Anda sudah mendaftarkan pekerja ini" in chat.question.text
    assert "Pekerja lain" in " ".join(chat.labels())


async def test_per_asn_limit(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    clock = FrozenClock()
    await seed_opds(sessionmaker, clock)
    chat = Chat(build_engine(sessionmaker, clock, engine_config(max_workers_per_asn=1)), clock)
    await chat.register()
    await chat.enroll_until_summary()
    await chat.press("Kirim ke PIC")
    await chat.say("/daftar")
    assert "sudah mensponsori 1 pekerja" in chat.text
    assert "Daftarkan pekerja" in " ".join(chat.labels())  # back at the menu


async def test_worker_phone_must_be_mobile(chat: Chat) -> None:
    await to_nik_step(chat)
    await chat.say(WORKER_NIK)
    await chat.press("Ya, benar")
    await chat.say("Bogor")
    question = chat.question.text
    await chat.say("(0736) 21234")
    assert "nomor telepon rumah/kantor" in chat.replies[0].text
    assert chat.question.text == question


async def test_text_where_a_button_was_expected(chat: Chat) -> None:
    await chat.say("/daftar")
    question = chat.question.text
    await chat.say("tukang sate")
    assert "tidak ada di pilihan" in chat.replies[0].text
    assert chat.question.text == question
    await chat.say("anggota keluarga")  # the label typed as words works
    await chat.say("sopir")
    assert "nama lengkap pekerja" in chat.question.text


async def test_typed_option_number_selects_it(chat: Chat) -> None:
    await chat.say("/daftar")
    await chat.say("2")  # 2nd option: family member
    await chat.say("3")  # 3rd option: driver
    await chat.say("Joko")
    await chat.say(OTHER_NIK)
    await chat.press("Ya, benar")
    await chat.say("Bogor")
    await chat.press("Lewati")
    await chat.say("Jl. Melati No. 5 RT 02/RW 01")
    await chat.say("Pasar Baru")
    await chat.say("Teluk Segara")
    await chat.say("Kabupaten Bogor")
    await chat.press("Tiga bulanan")
    assert "Mulai bulan apa" in chat.question.text


async def test_payroll_plan_records_statement_of_willingness(
    chat: Chat, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await to_nik_step(chat)
    await chat.say(WORKER_NIK)
    await chat.press("Ya, benar")
    await chat.say("Bogor")
    await chat.press("Lewati")
    await chat.say("Jl. Melati No. 5 RT 02/RW 01")
    await chat.say("Sukamaju")
    await chat.say("Ciawi")
    await chat.say("Kabupaten Bogor")
    await chat.press("Potong gaji")
    assert "pernyataan kesediaan" in chat.question.text
    await chat.press("Saya bersedia")
    await chat.press("Januari 2027")
    await chat.press("Kirim ke PIC")
    async with sessionmaker() as session:
        records = (
            (
                await session.execute(
                    select(ConsentRecord).where(
                        ConsentRecord.purpose == ConsentPurpose.PAYROLL_DEDUCTION
                    )
                )
            )
            .scalars()
            .all()
        )
    (sponsorship,) = await _sponsorships(sessionmaker)
    assert sponsorship.plan is PaymentPlan.PAYROLL_DEDUCTION
    assert [r.sponsorship_id for r in records] == [sponsorship.id]
    assert records[0].recorded_at == chat.clock()


async def test_edit_nik_from_summary_reconfirms_birth_date(
    chat: Chat, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await chat.enroll_until_summary()
    await chat.press("Ubah data")
    await chat.press("NIK")
    await chat.say(OTHER_NIK)
    assert "1 Januari 1980" in chat.question.text  # birth date asked again
    await chat.press("Ya, benar")
    summary = chat.question.text
    assert "1771********0003" in summary
    assert "laki-laki" in summary
    assert "Sukamaju" in summary  # the other answers are kept
    await chat.press("Kirim ke PIC")
    async with sessionmaker() as session:
        worker = (await session.execute(select(Worker))).scalar_one()
    assert worker.nik_masked == "1771********0003"
    assert worker.birth_date == date(1980, 1, 1)


async def test_my_workers_lists_status_due_and_amount(chat: Chat) -> None:
    await chat.enroll_until_summary()
    await chat.press("Kirim ke PIC")
    await chat.press("Pekerja saya")
    listing = chat.replies[0].text
    assert "Siti Aminah" in listing
    assert "3201********0001" in listing
    assert "menunggu pemeriksaan PIC" in listing
    assert "15 Desember 2026, Rp16.800" in listing
