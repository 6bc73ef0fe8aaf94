"""Batches, the KPJ file and cards on the web: the chat's functions, files and notices
(issue 13), and untrusted input (big, not a spreadsheet, formula-looking, HTML)."""

from __future__ import annotations

import io

import openpyxl
from aiohttp.test_utils import TestClient
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.vocabulary import SponsorshipStatus
from storage.models import AuditLog, Worker
from tests.fakes.chat import OTHER_NIK, WORKER_NIK
from tests.fakes.web import Browser, pic_signs_in, web_server
from tests.fakes.workbench import Office, build_office

SCRIPT_NAME = "<script>alert(1)</script>"
FORMULA_NAME = '=HYPERLINK("http://evil.example","klik")'


async def _accept_all(browser: Browser, office: Office) -> None:
    ids = [("id", str(s.id)) for s in await office.sponsorships()]
    assert (await browser.post("/web/queue/accept", ids)).status == 200


async def _names(office: Office, *names: str) -> None:
    """Names no chat step would take, as if written by an older version or another tool."""
    async with office.sessionmaker() as session, session.begin():
        for worker_id, name in zip(
            (await session.execute(select(Worker.id).order_by(Worker.id))).scalars(),
            names,
            strict=False,
        ):
            await session.execute(
                update(Worker).where(Worker.id == worker_id).values(full_name=name)
            )


async def test_export_download_mark_sent_upload_apply_and_hand_over(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    await office.enroll_two()
    async with web_server(office) as server, TestClient(server) as client:
        browser = await pic_signs_in(office, office.pic, client)
        await _accept_all(browser, office)
        await browser.get("/web/batches")
        assert "Diterima, belum masuk batch: 2" in browser.last
        assert (await browser.post("/web/batches/export", {})).status == 200
        assert "BKL-DINKES-2026-001" in browser.last
        batch_id = (await office.sponsorships())[0].batch_id
        file = await client.get(f"/web/batches/{batch_id}/file")
        assert file.status == 200
        assert file.headers["Content-Disposition"].endswith('"BKL-DINKES-2026-001.xlsx"')
        sheet = openpyxl.load_workbook(io.BytesIO(await file.read())).active
        assert sheet is not None
        cells = {str(cell.value) for row in sheet.iter_rows() for cell in row}
        assert {WORKER_NIK, OTHER_NIK} <= cells  # the full NIKs, for BPJS
        assert (await browser.post(f"/web/batches/{batch_id}/sent", {})).status == 200
        assert {s.status for s in await office.sponsorships()} == {SponsorshipStatus.SUBMITTED}
        csv = f"NIK,KPJ\n{WORKER_NIK},90000000001\n{OTHER_NIK},90000000002\n".encode()
        response = await browser.upload("/web/batches/import", "kpj.csv", csv)
        assert response.status == 200
        assert "Terapkan" in browser.last or "apply" in browser.last.lower()
        assert {s.status for s in await office.sponsorships()} == {SponsorshipStatus.SUBMITTED}
        import_id = browser.last.split("/web/imports/")[1].split("/")[0]
        assert (await browser.post(f"/web/imports/{import_id}/apply", {})).status == 200
        assert {s.status for s in await office.sponsorships()} == {SponsorshipStatus.ACTIVE}
        assert len(await office.outbox("card_ready")) == 2
        await browser.get("/web/cards")
        assert "90000000001" in browser.last and "90000000002" in browser.last
        first, _ = await office.sponsorships()
        assert (await browser.post("/web/cards/hand-over", {"id": str(first.id)})).status == 200
        assert "1 kartu" in browser.last
        await browser.post("/web/cards/hand-over", {"batch": "BKL-DINKES-2026-001"})
        assert "1 kartu" in browser.last
    statuses = {s.status for s in await office.sponsorships()}
    assert statuses == {SponsorshipStatus.CARD_HANDED_OVER}
    async with sessionmaker() as session:
        audited = (
            await session.execute(select(AuditLog.action, AuditLog.details).order_by(AuditLog.id))
        ).all()
    actions = [action for action, _ in audited]
    for expected in ("batch.export", "batch.download", "batch.submit", "import.preview"):
        assert expected in actions
    assert "import.apply" in actions and actions.count("card.hand_over") == 2
    download = next(details for action, details in audited if action == "batch.download")
    assert download["channel"] == "web" and download["rows"] == 2


async def test_a_50_mb_upload_is_refused_cleanly(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    async with web_server(office) as server, TestClient(server) as client:
        browser = await pic_signs_in(office, office.pic, client)
        response = await browser.upload("/web/batches/import", "big.csv", b"1" * (50 << 20))
        assert response.status == 200
        assert "terlalu besar: batasnya 20 MB" in browser.last
        # The server goes on serving.
        assert (await browser.get("/web/batches")).status == 200
    async with sessionmaker() as session:
        assert (
            "import.preview" not in (await session.execute(select(AuditLog.action))).scalars().all()
        )


async def test_a_file_that_is_no_spreadsheet_is_refused_with_the_chats_reason(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    async with web_server(office) as server, TestClient(server) as client:
        browser = await pic_signs_in(office, office.pic, client)
        pdf = b"%PDF-1.4\n" + b"\x00\x01binary" * 100
        assert (await browser.upload("/web/batches/import", "kpj.pdf", pdf)).status == 200
        assert "Berkas kpj.pdf bukan CSV atau Excel (.xlsx)" in browser.last
        assert "/web/imports/" not in browser.last  # nothing to apply


async def test_formula_looking_cells_stay_text(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    await office.enroll()
    await _names(office, FORMULA_NAME)
    async with web_server(office) as server, TestClient(server) as client:
        browser = await pic_signs_in(office, office.pic, client)
        await _accept_all(browser, office)
        await browser.post("/web/batches/export", {})
        batch_id = (await office.sponsorships())[0].batch_id
        file = await client.get(f"/web/batches/{batch_id}/file")
        sheet = openpyxl.load_workbook(io.BytesIO(await file.read())).active
        assert sheet is not None
        found = [c for row in sheet.iter_rows() for c in row if c.value == FORMULA_NAME]
        assert found and all(cell.data_type == "s" for cell in found)  # a string, not a formula
        await browser.post(f"/web/batches/{batch_id}/sent", {})
        csv = f'NIK,KPJ\n{WORKER_NIK},"=1+2"\n'.encode()
        await browser.upload("/web/batches/import", "kpj.csv", csv)
        # The formula is a malformed KPJ: rejected, nothing to apply.
        assert "Terapkan" not in browser.last
        assert (await office.sponsorships())[0].kpj is None


async def test_html_in_a_workers_name_is_escaped_on_every_page(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    await office.enroll_two()
    await _names(office, SCRIPT_NAME, SCRIPT_NAME)
    async with web_server(office) as server, TestClient(server) as client:
        browser = await pic_signs_in(office, office.pic, client)
        pages = []
        await browser.get("/web/queue")
        pages.append(browser.last)
        await _accept_all(browser, office)
        pages.append(browser.last)  # the notices name the workers
        await browser.post("/web/batches/export", {})
        await browser.post(f"/web/batches/{(await office.sponsorships())[0].batch_id}/sent", {})
        csv = f"NIK,KPJ\n{WORKER_NIK},90000000001\n{OTHER_NIK},90000000002\n".encode()
        await browser.upload("/web/batches/import", "<b>kpj</b>.csv", csv)
        pages.append(browser.last)
        import_id = browser.last.split("/web/imports/")[1].split("/")[0]
        await browser.post(f"/web/imports/{import_id}/apply", {})
        await browser.get("/web/cards")
        pages.append(browser.last)
    for page in pages:
        assert "<script>alert" not in page and "<b>kpj" not in page
    assert sum("&lt;script&gt;alert(1)&lt;/script&gt;" in page for page in pages) >= 3


async def test_show_nik_is_explicit_and_audited(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    await office.enroll()
    sid = (await office.sponsorships())[0].id
    async with web_server(office) as server, TestClient(server) as client:
        browser = await pic_signs_in(office, office.pic, client)
        await browser.get("/web/queue")
        assert WORKER_NIK not in browser.last
        assert (await browser.post(f"/web/queue/{sid}/nik", {})).status == 200
        assert WORKER_NIK in browser.last
    async with sessionmaker() as session:
        row = (
            await session.execute(
                select(AuditLog.actor_type, AuditLog.record_id, AuditLog.details).where(
                    AuditLog.action == "enrollment.show_nik"
                )
            )
        ).one()
    assert row.actor_type == "pic" and row.record_id == str(sid)
    assert WORKER_NIK not in str(row.details)


async def test_another_opds_batch_and_import_are_not_found(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    await office.enroll()
    async with web_server(office) as server, TestClient(server) as client:
        pic = await pic_signs_in(office, office.pic, client)
        await _accept_all(pic, office)
        await pic.post("/web/batches/export", {})
        batch_id = (await office.sponsorships())[0].batch_id
        other = await pic_signs_in(office, office.other_pic, client)
        assert (await other.get(f"/web/batches/{batch_id}/file")).status == 404
        assert (await other.post(f"/web/batches/{batch_id}/sent", {})).status == 404
        card = str((await office.sponsorships())[0].id)
        assert (await other.post("/web/cards/hand-over", {"id": card})).status == 404
    (sponsorship,) = await office.sponsorships()
    assert sponsorship.status is SponsorshipStatus.ACCEPTED  # not submitted by the other PIC
    async with sessionmaker() as session:
        actions = (await session.execute(select(AuditLog.action))).scalars().all()
    assert "batch.download" not in actions and "batch.submit" not in actions
