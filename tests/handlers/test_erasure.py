"""Erasure (PRODUCT 7, issue 11.3): the right worker, every copy, and the batch file afterwards."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from openpyxl import load_workbook
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.vocabulary import Channel, OutboxStatus, SponsorshipStatus
from storage import worker_side
from storage.audit import Actor
from storage.collective_file import ERASED_ROW_NAME, HEADER_ROW
from storage.models import (
    Asn,
    AuditLog,
    Base,
    ChannelAccount,
    Conversation,
    FailedUpdate,
    Outbox,
    Sponsorship,
    WhatsappInbound,
    Worker,
)
from storage.worker_side import ERASED_ACCOUNT_PREFIX
from tests.fakes.chat import OTHER_NIK, WORKER_NIK, Chat
from tests.fakes.workbench import Office, activate, build_office, issue_cards

#: Both workers of `activate` get the phone the ASN types in `enroll_until_summary`.
SHARED_WA_ID = "6281298765432"
KPJ_SITI = "90000000000"
KPJ_JOKO = "90000000001"


@pytest.fixture
async def office(sessionmaker: async_sessionmaker[AsyncSession]) -> Office:
    return await build_office(sessionmaker, worker_channel=Channel.WHATSAPP)


def worker_chat(office: Office, wa_id: str = SHARED_WA_ID) -> Chat:
    return Chat(
        office.engine,
        office.clock,
        sender=wa_id,
        channel=Channel.WHATSAPP,
        sender_phone="+" + wa_id,
    )


async def workers(office: Office) -> dict[int, Worker]:
    async with office.sessionmaker() as session:
        return {w.id: w for w in (await session.execute(select(Worker))).scalars()}


async def test_hapus_on_a_shared_phone_asks_which_worker_and_erases_only_that_one(
    office: Office,
) -> None:
    await activate(office, (WORKER_NIK, "Siti Aminah"), (OTHER_NIK, "Joko Susilo"))
    phone = worker_chat(office)
    # STATUS shows every worker of the number, each named with the masked NIK.
    await phone.say("status")
    assert "Siti Aminah" in phone.text and "Joko Susilo" in phone.text

    await phone.say("hapus")
    assert "lebih dari satu pekerja" in phone.text
    assert phone.labels() == [
        "Siti Aminah (NIK 3201********0001)",
        "Joko Susilo (NIK 1771********0003)",
    ]
    await phone.press("Joko Susilo")
    assert "Pekerja: Joko Susilo" in phone.text
    await phone.press("Ya, hapus")
    assert "Data Anda sudah dihapus" in phone.text

    siti, joko = await office.sponsorships()
    assert (siti.status, siti.kpj) == (SponsorshipStatus.ACTIVE, KPJ_SITI)
    assert (joko.status, joko.end_reason, joko.kpj) == (
        SponsorshipStatus.ENDED,
        "worker_erasure",
        KPJ_JOKO,
    )
    stored = await workers(office)
    assert (stored[siti.worker_id].full_name, stored[siti.worker_id].phone_e164) == (
        "Siti Aminah",
        "+" + SHARED_WA_ID,
    )
    assert stored[siti.worker_id].erased_at is None
    assert stored[joko.worker_id].erased_at is not None
    assert stored[joko.worker_id].full_name == worker_side.ERASED_NAME
    erased = stored[joko.worker_id]
    assert (erased.birth_place, erased.street_address, erased.regency) == (None, None, None)
    assert stored[siti.worker_id].street_address == "Jl. Melati No. 5 RT 02/RW 01"
    # The ASN and PIC hear about Joko's enrollment only, with his KPJ, not Siti's.
    notices = await office.outbox("worker_erased")
    assert {n.dedupe_key.split(":")[1] for n in notices} == {str(joko.id)}
    assert all(KPJ_JOKO in n.body and KPJ_SITI not in n.body for n in notices)
    # The number still belongs to Siti: her account and her record stay.
    async with office.sessionmaker() as session:
        accounts = (
            await session.execute(
                select(ChannelAccount.external_id).where(ChannelAccount.channel == Channel.WHATSAPP)
            )
        ).scalars()
        assert list(accounts) == [SHARED_WA_ID]
    await phone.say("status")
    assert "Siti Aminah" in phone.text and "Joko Susilo" not in phone.text
    assert "Status saya" in phone.labels()


async def test_an_erasure_names_one_worker_of_that_phone_or_nobody(office: Office) -> None:
    await activate(office, (WORKER_NIK, "Siti Aminah"), (OTHER_NIK, "Joko Susilo"))
    siti, _ = await office.sponsorships()
    async with office.sessionmaker() as session, session.begin():
        # Another number cannot erase Siti, even by her id.
        erasure = await worker_side.erase_worker(
            session,
            phone_e164="+6281311112222",
            worker_id=siti.worker_id,
            actor=Actor.admin("test"),
            now=office.clock(),
        )
    assert erasure is None
    assert {s.status for s in await office.sponsorships()} == {SponsorshipStatus.ACTIVE}


async def test_one_workers_phone_goes_straight_to_the_confirmation(office: Office) -> None:
    await activate(office, (WORKER_NIK, "Siti Aminah"))
    phone = worker_chat(office)
    await phone.say("hapus")
    assert "lebih dari satu pekerja" not in phone.text
    assert phone.labels() == ["Ya, hapus", "Tidak, batalkan"]


async def test_the_asn_no_longer_counts_an_erased_worker_and_only_the_pic_is_asked_to_report(
    office: Office,
) -> None:
    """Issue 12 item 22: the ASN's list read "(2) ... 2. - ... berakhir" after an erasure,
    and the ASN's copy of the notice told the PIC what to do."""
    await activate(office, (WORKER_NIK, "Siti Aminah"), (OTHER_NIK, "Joko Susilo"))
    phone = worker_chat(office)
    await phone.say("hapus")
    await phone.press("Joko Susilo")
    await phone.press("Ya, hapus")

    await office.asn.say("/pekerja")
    assert "Pekerja yang Anda sponsori (1):" in office.asn.text
    assert "1. Siti Aminah" in office.asn.text
    assert "\n2. " not in office.asn.text and "berakhir" not in office.asn.text
    assert "💳 Catat pembayaran" in office.asn.labels()  # for Siti, still active

    _, joko = await office.sponsorships()
    notices = {n.dedupe_key: n.body for n in await office.outbox("worker_erased")}
    (to_asn,) = [body for key, body in notices.items() if key.startswith(f"erased:{joko.id}:asn:")]
    assert "BPJS" not in to_asn and "Laporkan" not in to_asn and "PIC" not in to_asn
    assert "KPJ " + KPJ_JOKO in to_asn
    (to_pic,) = [body for key, body in notices.items() if ":pic:" in key]
    assert "Laporkan berakhirnya kepesertaan ini ke BPJS Ketenagakerjaan" in to_pic


async def test_an_asn_whose_only_worker_was_erased_has_no_worker_and_nothing_to_pay(
    office: Office,
) -> None:
    await activate(office, (WORKER_NIK, "Siti Aminah"))
    phone = worker_chat(office)
    await phone.say("hapus")
    await phone.press("Ya, hapus")

    await office.asn.say("/pekerja")
    assert "Pekerja yang Anda sponsori" not in office.asn.text
    assert "belum mendaftarkan pekerja" in office.asn.text
    assert "💳 Catat pembayaran" not in office.asn.labels()
    await office.asn.say("/bayar")
    assert "Belum ada pekerja aktif yang iurannya Anda bayar sendiri" in office.asn.text


def sheet_rows(content: bytes) -> list[list[object]]:
    sheet = load_workbook(io.BytesIO(content), read_only=True).worksheets[0]
    return [list(row) for row in sheet.iter_rows(values_only=True)]


async def test_re_downloading_a_submitted_batch_after_an_erasure_shows_the_row_erased(
    office: Office,
) -> None:
    await activate(office, (WORKER_NIK, "Siti Aminah"), (OTHER_NIK, "Joko Susilo"))
    phone = worker_chat(office)
    await phone.say("hapus")
    await phone.press("Joko Susilo")
    await phone.press("Ya, hapus")

    office.clock.advance(timedelta(days=1))
    await office.pic.say("pic")
    await office.pic.press("Berkas yang pernah diekspor")
    await office.pic.press("BKL-DINKES-2026-001")
    (document,) = office.pic.documents
    rows = sheet_rows(document.content)
    note = str(rows[HEADER_ROW - 2][0])
    assert note.startswith("Catatan: 1 baris") and "Pelindungan Data Pribadi" in note
    siti, joko = rows[HEADER_ROW:]
    assert siti[1:3] == [WORKER_NIK, "Siti Aminah"]
    assert joko[0] == 2
    personal = slice(1, 12)  # NIK to the work location, the name in between
    assert joko[personal] == [None, ERASED_ROW_NAME, *[None] * 9]
    # Occupation, relationship, income, programme, sponsor, plan, first month stay.
    assert joko[12:] == siti[12:]
    flat = json.dumps(rows, default=str)
    assert "Joko" not in flat and OTHER_NIK not in flat
    # Still one file: the same bytes on every re-download.
    await office.pic.say("pic")
    await office.pic.press("Berkas yang pernah diekspor")
    await office.pic.press("BKL-DINKES-2026-001")
    (again,) = office.pic.documents
    assert again.content == document.content


# --- every copy ----------------------------------------------------------------------------

NAME = "Siti Aminah"


#: How the worker of `activate` appears: name, number (wa_id, national), NIK, masked NIK.
WORKER_TRACES = (NAME, SHARED_WA_ID, "081298765432", WORKER_NIK, "3201********0001")


async def tables_quoting(
    sessionmaker: async_sessionmaker[AsyncSession], needles: tuple[str, ...] = WORKER_TRACES
) -> list[str]:
    """Every text, JSON and binary cell of every table, searched for any of `needles`.

    Case-insensitive; JSON as stored (non-ASCII letters escaped, so searched that
    way too). Returns "table.column: value" for each cell that still quotes one.
    """
    texts = {form for n in needles for form in (n.lower(), json.dumps(n.lower())[1:-1])}
    found: list[str] = []
    async with sessionmaker() as session:
        for table in Base.metadata.sorted_tables:
            for row in (await session.execute(select(table))).mappings():
                for column, value in row.items():
                    if isinstance(value, bytes):
                        hit = any(text.encode() in value.lower() for text in texts)
                    elif isinstance(value, str | dict | list):
                        cell = value if isinstance(value, str) else json.dumps(value)
                        hit = any(text in cell.lower() for text in texts)
                    else:
                        hit = False
                    if hit:
                        found.append(f"{table.name}.{column}: {value!r}")
    return found


async def test_after_an_erasure_no_table_quotes_the_worker(office: Office) -> None:
    await office.enroll(WORKER_NIK, NAME)
    phone = worker_chat(office)
    # The worker writes (their profile name comes along) and consents; the card comes.
    await phone.say("halo", display_name=NAME)
    await phone.press("YA")
    await issue_cards(office, WORKER_NIK)
    now = office.clock()
    async with office.sessionmaker() as session, session.begin():
        # Every notice so far went out (the consent request to the worker, the ASN's ones).
        await session.execute(
            update(Outbox).values(
                status=OutboxStatus.SENT, sent_at=now, provider_message_id="wamid.HBgL" + "x" * 8
            )
        )
        # A PIC's typed return reason and an ASN's parked draft quote her.
        await session.execute(
            update(Sponsorship).values(return_reason=f"Nama {NAME} tidak sesuai KTP")
        )
        # ... and its audit entry keeps the typed words (issue 12 item 21).
        session.add(
            AuditLog(
                at=now,
                actor_type="pic",
                actor="1",
                action="enrollment.return",
                record_type="sponsorship",
                record_id="1",
                opd_id=None,
                details={"reason_code": None, "reason": f"Nama {NAME} tidak sesuai KTP"},
            )
        )
        asn_account = (await session.execute(select(Asn.channel_account_id))).scalar_one()
        await session.execute(
            update(Conversation)
            .where(Conversation.channel_account_id == asn_account)
            .values(draft={"flow": "fix", "step": "name", "data": {"name": NAME}, "history": []})
        )
        # The number's journal: a handled message, and the one being handled now.
        for message_id, processed in (("wamid.old", now), ("wamid.confirm", None)):
            session.add(
                WhatsappInbound(
                    message_id=message_id,
                    sender_id=SHARED_WA_ID,
                    payload_ciphertext=b"\x00" * 40,
                    received_at=now,
                    processed_at=processed,
                    claimed_until=None if processed else now + timedelta(minutes=5),
                )
            )
        session.add(
            FailedUpdate(
                channel=Channel.WHATSAPP,
                update_id="wamid.parked",
                sender_id=SHARED_WA_ID,
                payload_ciphertext=b"\x00" * 40,
                error_type="ValueError",
                attempts=5,
                failed_at=now,
            )
        )
    assert await tables_quoting(office.sessionmaker)  # the scan sees them

    await phone.say("hapus")
    confirm = next(o.id for o in phone.options if o.label == "Ya, hapus")
    await phone.press_id(confirm, update_id="wamid.confirm")
    assert "Data Anda sudah dihapus" in phone.text

    assert await tables_quoting(office.sessionmaker) == []
    async with office.sessionmaker() as session:
        account = (
            await session.execute(
                select(ChannelAccount).where(ChannelAccount.channel == Channel.WHATSAPP)
            )
        ).scalar_one()
        journal = (await session.execute(select(WhatsappInbound))).scalars().all()
        parked = (await session.execute(select(FailedUpdate))).scalars().all()
        sent_to_worker = (
            (await session.execute(select(Outbox).where(Outbox.kind == "consent_request")))
            .scalars()
            .all()
        )
    assert account.external_id.startswith(ERASED_ACCOUNT_PREFIX)
    assert account.display_name is None
    # The handled row is gone; the one in hand stays for the processor to mark, numberless.
    assert [(j.message_id, j.sender_id) for j in journal] == [("wamid.confirm", "[dihapus]")]
    assert parked == []
    # Sent notices stay (history), redacted: no name, no number, no wamid.
    (request,) = sent_to_worker
    assert request.status is OutboxStatus.SENT
    assert request.recipient == "[dihapus]" and request.provider_message_id is None
    assert "[dihapus]" in request.body and request.params["worker"] == "[dihapus]"
    # The number is a stranger now; writing again starts afresh.
    await phone.say("status")
    assert "tidak terdaftar sebagai pekerja" in phone.text
