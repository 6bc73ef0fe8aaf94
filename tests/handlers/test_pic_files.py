"""PRODUCT 4.5 through the real engine with real files: the collective XLSX out, the KPJ file in."""

from __future__ import annotations

import io

import pytest
from openpyxl import Workbook, load_workbook
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.vocabulary import BatchStatus, ImportStatus, SponsorshipStatus
from storage.isolated_read import ReadLimits
from storage.models import AuditLog, KpjImport, Pic, Sponsorship, SubmissionBatch
from tests.fakes.chat import OTHER_NIK, WORKER_NIK, Chat, engine_config
from tests.fakes.hostile_files import far_cell_xlsx, zip_bomb_xlsx
from tests.fakes.workbench import Office, build_office

KPJ_SITI = "12345678901"
KPJ_JOKO = "12345678902"
#: A worker of Dinas Pendidikan (another OPD): a woman born 1 January 1995.
FOREIGN_NIK = "1771014101950002"


@pytest.fixture
async def office(sessionmaker: async_sessionmaker[AsyncSession]) -> Office:
    return await build_office(sessionmaker)


async def accept_all(office: Office) -> None:
    await office.pic.say("pic")
    await office.pic.press("Periksa pendaftaran")
    while any("Terima" in label for label in office.pic.labels()):
        await office.pic.press("Terima")


async def submitted_batch(office: Office) -> bytes:
    """Two enrollments accepted, exported and confirmed as sent; returns the file."""
    await office.enroll_two()
    await accept_all(office)
    await office.pic.say("pic")
    await office.pic.press("Ekspor")
    (document,) = office.pic.documents
    await office.pic.press("Sudah dikirim ke BPJS")
    return document.content


def cells(content: bytes) -> list[list[object]]:
    sheet = load_workbook(io.BytesIO(content), read_only=True).worksheets[0]
    return [list(row) for row in sheet.iter_rows(values_only=True)]


def csv_file(*rows: tuple[str, str], header: str = "NIK,No KPJ") -> bytes:
    lines = [header, *(f"{nik},{kpj}" for nik, kpj in rows)]
    return ("\r\n".join(lines) + "\r\n").encode()


async def test_export_confirm_and_re_export_gives_the_same_file(office: Office) -> None:
    await office.enroll_two()
    await accept_all(office)
    await office.pic.say("pic")
    await office.pic.press("Ekspor")
    assert "Berkas kolektif BKL-DINKES-2026-001: 2 pendaftaran" in office.pic.text
    (document,) = office.pic.documents
    assert document.file_name == "BKL-DINKES-2026-001.xlsx"
    rows = cells(document.content)
    flat = [str(value) for row in rows for value in row if value is not None]
    assert WORKER_NIK in flat and OTHER_NIK in flat  # full NIKs, as text, for BPJS
    assert "Siti Aminah" in flat and "198503122010011002" in flat
    # Not yet confirmed: the enrollments stay accepted.
    assert {r.status for r in await office.sponsorships()} == {SponsorshipStatus.ACCEPTED}

    await office.pic.press("Sudah dikirim ke BPJS")
    assert "tercatat dikirim ke BPJS" in office.pic.text
    assert {r.status for r in await office.sponsorships()} == {SponsorshipStatus.SUBMITTED}
    async with office.sessionmaker() as session:
        batch = (await session.execute(select(SubmissionBatch))).scalar_one()
    assert batch.status is BatchStatus.SUBMITTED and batch.row_count == 2
    assert batch.submitted_at is not None

    office.clock.advance(__import__("datetime").timedelta(days=3))
    await office.pic.say("pic")
    await office.pic.press("Berkas yang pernah diekspor")
    await office.pic.press("BKL-DINKES-2026-001")
    (again,) = office.pic.documents
    assert again.content == document.content
    # Pressing "sent" twice is harmless.
    await office.pic.press_id(f"g:pic_submit:{batch.id}")
    assert "sudah tercatat dikirim" in office.pic.text


async def test_every_collective_file_handed_out_in_the_chat_is_audited(office: Office) -> None:
    # Regression (issue 11): a second export of the open batch and every
    # re-download sent full NIKs without an audit entry.
    await office.enroll_two()
    await accept_all(office)
    await office.pic.say("pic")
    await office.pic.press("Ekspor")
    await office.pic.say("pic")
    await office.pic.press("Ekspor")  # nothing new: the open batch's file again
    await office.pic.say("pic")
    await office.pic.press("Berkas yang pernah diekspor")
    await office.pic.press("BKL-DINKES-2026-001")
    assert len(office.pic.documents) == 1

    async with office.sessionmaker() as session:
        batch = (await session.execute(select(SubmissionBatch))).scalar_one()
        pic_id = (
            await session.execute(select(Pic.id).where(Pic.opd_id == batch.opd_id))
        ).scalar_one()
        downloads = (
            await session.execute(
                select(
                    AuditLog.actor_type,
                    AuditLog.actor,
                    AuditLog.record_id,
                    AuditLog.opd_id,
                    AuditLog.details,
                )
                .where(AuditLog.action == "batch.download")
                .order_by(AuditLog.id)
            )
        ).all()
    entry = (
        "pic",
        str(pic_id),
        str(batch.id),
        batch.opd_id,
        {"batch": "BKL-DINKES-2026-001", "rows": 2, "channel": "telegram"},
    )
    assert [tuple(row) for row in downloads] == [entry] * 3


async def test_kpj_import_previews_then_applies_and_plans_card_notices_once(
    office: Office,
) -> None:
    await submitted_batch(office)
    content = csv_file((WORKER_NIK, KPJ_SITI), (OTHER_NIK, "123-4567-8902"))
    await office.pic.send_document("kpj_bpjs.csv", content)
    text = office.pic.text
    assert "Pratinjau kpj_bpjs.csv: 2 baris data" in text
    assert "Cocok, siap diterapkan: 2" in text
    # Nothing written before the PIC confirms.
    assert {r.status for r in await office.sponsorships()} == {SponsorshipStatus.SUBMITTED}
    assert await office.outbox("card_ready") == []

    await office.pic.press("Terapkan 2 KPJ")
    assert "2 pendaftaran kini aktif" in office.pic.text
    rows = await office.sponsorships()
    assert [r.status for r in rows] == [SponsorshipStatus.ACTIVE] * 2
    assert sorted(r.kpj or "" for r in rows) == [KPJ_SITI, KPJ_JOKO]
    notices = await office.outbox("card_ready")
    assert len(notices) == 2 and {n.recipient for n in notices} == {"1001"}
    assert any(KPJ_SITI in n.body and "Siti Aminah" in n.body for n in notices)

    # The same file again: recognised as already recorded, nothing to apply, no new notice.
    await office.pic.send_document("kpj_bpjs.csv", content)
    assert "Sudah tercatat sebelumnya: 2" in office.pic.text
    assert not any("Terapkan" in label for label in office.pic.labels())
    assert len(await office.outbox("card_ready")) == 2
    # An applied import cannot be applied again by an old button.
    async with office.sessionmaker() as session:
        first = (await session.execute(select(KpjImport).order_by(KpjImport.id))).scalars().first()
    assert first is not None and first.status is ImportStatus.APPLIED
    await office.pic.press_id(f"g:pic_apply:{first.id}")
    assert "sudah diterapkan atau dibatalkan" in office.pic.text

    await office.asn.say("/pekerja")
    assert f"Nomor KPJ: {KPJ_SITI}" in office.asn.text


async def test_an_import_applies_only_what_did_not_change_since_the_preview(
    office: Office,
) -> None:
    """Between preview and "Terapkan" one of the two enrollments ended: it keeps its
    status and gets no KPJ, the other is activated (one set-based UPDATE for both)."""
    await submitted_batch(office)
    content = csv_file((WORKER_NIK, KPJ_SITI), (OTHER_NIK, "123-4567-8902"))
    await office.pic.send_document("kpj_bpjs.csv", content)
    assert "Cocok, siap diterapkan: 2" in office.pic.text
    first, second = sorted(await office.sponsorships(), key=lambda row: row.id)
    async with office.sessionmaker() as session, session.begin():
        await session.execute(
            update(Sponsorship)
            .where(Sponsorship.id == first.id)
            .values(status=SponsorshipStatus.ENDED)
        )
    await office.pic.press("Terapkan 2 KPJ")
    assert "1 pendaftaran kini aktif" in office.pic.text
    rows = {row.id: row for row in await office.sponsorships()}
    assert rows[first.id].status is SponsorshipStatus.ENDED and rows[first.id].kpj is None
    assert rows[second.id].status is SponsorshipStatus.ACTIVE
    assert rows[second.id].kpj is not None
    assert len(await office.outbox("card_ready")) == 1


async def test_xlsx_import_with_title_rows_and_spaced_headers(office: Office) -> None:
    await submitted_batch(office)
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Daftar peserta BPU terdaftar"])
    sheet.append([])
    sheet.append(["No", " Nomor  NIK ", "Nama", "NO. KPJ"])
    sheet.append([1, WORKER_NIK, "Siti Aminah", KPJ_SITI])
    sheet.append([None, None, None, None])
    sheet.append([2, OTHER_NIK, "Joko Susilo", KPJ_JOKO])
    buffer = io.BytesIO()
    book.save(buffer)
    await office.pic.send_document("hasil_bpjs.xlsx", buffer.getvalue())
    assert "Cocok, siap diterapkan: 2" in office.pic.text
    assert "1 baris kosong dilewati" in office.pic.text


async def test_rejected_rows_are_explained_and_nothing_is_written(office: Office) -> None:
    await submitted_batch(office)
    # A worker of another OPD, enrolled by its own ASN.
    teacher = Chat(office.engine, office.clock, sender="1002")
    await teacher.register(
        nip="199001152015032001",
        name="Rina Wati",
        opd_query="pendidikan",
        opd_label="Dinas Pendidikan",
        phone="081311112222",
    )
    await teacher.enroll_until_summary(nik=FOREIGN_NIK, name="Sri Lestari")
    await teacher.press("Kirim ke PIC")
    content = csv_file(
        (WORKER_NIK, KPJ_SITI),
        (WORKER_NIK, KPJ_SITI),  # repeated
        ("3.20101E+15", "12345678903"),  # NIK stored as a number by a spreadsheet
        (FOREIGN_NIK, "12345678904"),  # another OPD's worker
        ("3201010101010009", "12345678905"),  # unknown NIK
        (OTHER_NIK, "12-34"),  # malformed KPJ
    )
    await office.pic.send_document("kpj.csv", content)
    text = office.pic.text
    assert "Ditolak: 5" in text
    assert "NIK muncul lebih dari sekali: 1" in text
    assert "NIK tersimpan sebagai angka" in text
    assert "pekerja terdaftar di OPD lain: 1" in text
    assert "NIK tidak dikenal: 1" in text
    assert "nomor KPJ tidak valid" in text
    assert "Dinas Pendidikan" not in text  # which other OPD is not revealed
    assert FOREIGN_NIK not in text and "1771********0002" in text
    await office.pic.press("Batalkan impor")
    assert "tidak ada yang diubah" in office.pic.text
    assert {r.status for r in await office.sponsorships() if r.opd_id == await office.opd_id()} == {
        SponsorshipStatus.SUBMITTED
    }
    async with office.sessionmaker() as session:
        staged = (await session.execute(select(KpjImport))).scalar_one()
    assert staged.status is ImportStatus.CANCELLED


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("surat.pdf", b"%PDF-1.4 not a spreadsheet", "bukan CSV atau Excel"),
        ("kpj.csv", b"Nama,No KPJ\r\nSiti,12345678901\r\n", "tidak punya kolom NIK"),
        ("kpj.csv", b"NIK,Nama\r\n3201014708900001,Siti\r\n", "tidak punya kolom KPJ"),
        ("kpj.csv", None, "terlalu besar"),
    ],
)
async def test_unusable_files_get_a_specific_answer(
    office: Office, name: str, content: bytes | None, expected: str
) -> None:
    await submitted_batch(office)
    await office.pic.send_document(name, content)
    assert expected in office.pic.text
    async with office.sessionmaker() as session:
        assert (await session.execute(select(KpjImport))).first() is None
    assert {r.status for r in await office.sponsorships()} == {SponsorshipStatus.SUBMITTED}


async def test_a_file_from_a_non_pic_is_not_an_import(office: Office) -> None:
    await office.enroll()
    await office.asn.send_document("kpj.csv", csv_file((WORKER_NIK, KPJ_SITI)))
    assert "Pratinjau" not in office.asn.text
    async with office.sessionmaker() as session:
        assert (await session.execute(select(KpjImport))).first() is None


async def test_cards_handed_over_one_by_kpj_then_the_rest_of_the_batch(office: Office) -> None:
    await submitted_batch(office)
    await office.pic.send_document(
        "kpj.csv", csv_file((WORKER_NIK, KPJ_SITI), (OTHER_NIK, KPJ_JOKO))
    )
    await office.pic.press("Terapkan")
    await office.pic.say("pic")
    await office.pic.press("Kartu diserahkan (2)")
    assert "Kartu yang belum diserahkan: 2" in office.pic.text
    await office.pic.say("1234567890")  # ten digits
    assert "11 angka" in office.pic.text
    await office.pic.say(KPJ_SITI)
    assert "Kartu Siti Aminah tercatat sudah diserahkan" in office.pic.text
    await office.pic.press("Semua kartu batch BKL-DINKES-2026-001 (1)")
    assert "Tandai 1 kartu batch BKL-DINKES-2026-001 sudah diserahkan?" in office.pic.text
    await office.pic.press("Ya, 1 kartu diserahkan")
    assert "1 kartu batch BKL-DINKES-2026-001" in office.pic.text
    rows = await office.sponsorships()
    assert [r.status for r in rows] == [SponsorshipStatus.CARD_HANDED_OVER] * 2
    assert all(r.card_handed_at is not None for r in rows)


# --- crafted files (issue 11): a refusal, then the next file -------------------------------


@pytest.mark.parametrize(
    ("name", "content"),
    [("kpj_bpjs.xlsx", far_cell_xlsx()), ("kpj_bpjs.xlsx", zip_bomb_xlsx(200))],
    ids=["cell-at-XFD999990", "zip-bomb"],
)
async def test_a_crafted_file_is_refused_and_the_next_file_is_read(
    office: Office, name: str, content: bytes
) -> None:
    await submitted_batch(office)
    await office.pic.send_document(name, content)
    assert "Berkas kpj_bpjs.xlsx ditolak: terlalu besar untuk dibaca" in office.pic.text
    async with office.sessionmaker() as session:
        assert (await session.execute(select(KpjImport))).first() is None
    # Others are served, and the PIC's next file is read as usual.
    await office.asn.say("/pekerja")
    assert "Siti Aminah" in office.asn.text
    await office.pic.send_document("kpj_bpjs.csv", csv_file((WORKER_NIK, KPJ_SITI)))
    assert "Cocok, siap diterapkan: 1" in office.pic.text


async def test_a_reader_stopped_by_its_limits_is_a_refusal_with_another_chance(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    # A CPU limit of 0 s: the child reading the file is killed at once.
    config = engine_config(kpj_read_limits=ReadLimits(cpu_seconds=0))
    office = await build_office(sessionmaker, config=config)
    await submitted_batch(office)
    await office.pic.send_document("kpj_bpjs.csv", csv_file((WORKER_NIK, KPJ_SITI)))
    assert "Berkas kpj_bpjs.csv ditolak: tidak bisa dibaca dalam waktu" in office.pic.text
    assert "kirim berkas lain" in office.pic.text
    assert {r.status for r in await office.sponsorships()} == {SponsorshipStatus.SUBMITTED}
