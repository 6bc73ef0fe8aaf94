"""`sertakan export` and `sertakan import`, parsed as `sertakan` parses them, on the test DB."""

from __future__ import annotations

import argparse
import base64
import getpass
import io
import os
import re
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from openpyxl import load_workbook
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.app import Runtime
from bot.cli import build_parser
from bot.cli_files import SHOWN_REJECTED, dispatch
from domain.nik import mask_nik
from domain.vocabulary import ImportStatus, SponsorshipStatus
from storage import workbench
from storage.audit import Actor
from storage.collective_file import (
    COLLECTIVE_HEADERS,
    DATE_LABEL,
    DEFAULT_BUDGET,
    ERASED_ROW_NAME,
    HEADER_ROW,
    read_collective_csv,
)
from storage.models import AuditLog, KpjImport, Opd, Outbox, Sponsorship, SubmissionBatch
from tests.fakes.admin import Admin
from tests.fakes.chat import TEST_KEY, Chat
from tests.fakes.clock import FrozenClock
from tests.fakes.hostile_files import far_cell_xlsx, zip_bomb_xlsx
from tests.fakes.runtime import open_runtime
from tests.fakes.workbench import PIC_ID, appoint_pic
from tests.storage.test_collective import Seeder, kpj_for, nik_for

ADMIN = getpass.getuser()


def parser() -> argparse.ArgumentParser:
    return build_parser()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
async def runtime(
    tmp_path: Path, database_url: str, db_engine: AsyncEngine, clock: FrozenClock
) -> AsyncIterator[Runtime]:
    key = base64.urlsafe_b64encode(TEST_KEY).decode()
    async with open_runtime(tmp_path, database_url, clock=clock, nik_key=key) as runtime:
        yield runtime


@pytest.fixture
def admin(runtime: Runtime, capsys: pytest.CaptureFixture[str]) -> Admin:
    return Admin(runtime, capsys)


async def seed(
    runtime: Runtime, *, accepted: int = 0, submitted: int = 0, waiting: int = 0
) -> dict[str, list[int]]:
    """Enrollments of OPD DINKES by status; submitted ones in batch DINKES-2026-001."""
    ids: dict[str, list[int]] = {"accepted": [], "submitted": [], "waiting": []}
    async with runtime.db.begin() as connection:
        seeder = Seeder(connection)
        opd = await seeder.opd("DINKES", "Dinas Kesehatan")
        await seeder.opd("DISDIK", "Dinas Pendidikan")
        asn = await seeder.asn(opd)
        batch = await seeder.batch(opd, "DINKES-2026-001") if submitted else None
        index = 0
        for status, count, batch_id in (
            (SponsorshipStatus.ACCEPTED, accepted, None),
            (SponsorshipStatus.SUBMITTED, submitted, batch),
            (SponsorshipStatus.WAITING_FOR_PIC, waiting, None),
        ):
            for _ in range(count):
                index += 1
                sid = await seeder.enrollment(
                    nik_for(index), asn_id=asn, opd_id=opd, status=status, batch_id=batch_id
                )
                key = "waiting" if status is SponsorshipStatus.WAITING_FOR_PIC else status.value
                ids[key].append(sid)
    return ids


def niks_in(path: Path) -> list[str]:
    sheet = load_workbook(path, read_only=True).active
    assert sheet is not None
    return [str(row[1]) for row in sheet.iter_rows(min_row=HEADER_ROW + 1, values_only=True)]


async def test_commands_of_others_are_not_taken(runtime: Runtime) -> None:
    assert await dispatch(argparse.Namespace(command="coverage"), runtime) is None


# --- export ---------------------------------------------------------------------------------


async def test_export_makes_a_batch_of_the_accepted_enrollments(
    admin: Admin, runtime: Runtime, tmp_path: Path
) -> None:
    ids = await seed(runtime, accepted=4, waiting=2)
    out = tmp_path / "kolektif.xlsx"

    assert await admin.run("export", "--opd", "dinkes", "--out", str(out)) == 0

    assert "batch DINKES-2026-001 (exported): 4 rows written" in admin.out
    assert niks_in(out) == [nik_for(index) for index in range(1, 5)]
    async with runtime.db.connect() as connection:
        batched = await connection.scalars(
            select(Sponsorship.id).where(Sponsorship.batch_id.is_not(None)).order_by(Sponsorship.id)
        )
        assert list(batched) == ids["accepted"]
        entries = await connection.execute(
            select(AuditLog.action, AuditLog.actor, AuditLog.details).order_by(AuditLog.id)
        )
        assert [tuple(entry) for entry in entries] == [
            ("batch.export", ADMIN, {"rows": 4, "added": 4}),
            ("batch.download", ADMIN, {"batch": "DINKES-2026-001", "rows": 4, "channel": "cli"}),
        ]
    # The full NIK is in the file only.
    assert nik_for(1) not in admin.out + admin.err


async def test_export_to_a_csv_file_writes_the_same_columns_as_csv(
    admin: Admin, runtime: Runtime, tmp_path: Path
) -> None:
    await seed(runtime, accepted=2)
    out = tmp_path / "kolektif.csv"

    assert await admin.run("export", "--opd", "DINKES", "--out", str(out)) == 0

    assert "2 rows written" in admin.out
    header, rows = read_collective_csv(out.read_bytes())
    assert header == COLLECTIVE_HEADERS
    assert [row[header.index("NIK")] for row in rows] == [nik_for(1), nik_for(2)]
    assert {row[header.index("Program")] for row in rows} == {"JKK+JKM"}


async def test_every_file_written_is_audited_and_owner_only(
    admin: Admin, runtime: Runtime, tmp_path: Path
) -> None:
    # Regression (issue 11): `--batch` wrote full NIKs to disk with no audit entry.
    await seed(runtime, accepted=2, submitted=3)
    again = tmp_path / "again.xlsx"

    argv = ("export", "--opd", "DINKES", "--batch", "DINKES-2026-001", "--out", str(again))
    assert await admin.run(*argv) == 0

    assert again.stat().st_mode & 0o777 == 0o600
    async with runtime.db.connect() as connection:
        entries = await connection.execute(
            select(AuditLog.action, AuditLog.actor_type, AuditLog.actor, AuditLog.details)
        )
        assert [tuple(entry) for entry in entries] == [
            (
                "batch.download",
                "admin",
                ADMIN,
                {"batch": "DINKES-2026-001", "rows": 3, "channel": "cli"},
            )
        ]


async def test_a_file_that_could_not_be_written_is_not_audited_as_released(
    admin: Admin, runtime: Runtime, tmp_path: Path
) -> None:
    await seed(runtime, submitted=1)
    out = tmp_path / "missing" / "kolektif.xlsx"
    argv = ("export", "--opd", "DINKES", "--batch", "DINKES-2026-001", "--out", str(out))

    assert await admin.run(*argv) == 1

    async with runtime.db.connect() as connection:
        assert await connection.scalar(select(func.count()).select_from(AuditLog)) == 0


async def test_exporting_a_batch_again_gives_the_same_bytes(
    admin: Admin, runtime: Runtime, tmp_path: Path, clock: FrozenClock
) -> None:
    await seed(runtime, accepted=3)
    first, again, submitted = (tmp_path / name for name in ("a.xlsx", "b.xlsx", "c.xlsx"))
    batch_number = "DINKES-2026-001"
    assert await admin.run("export", "--opd", "DINKES", "--out", str(first)) == 0

    clock.advance(timedelta(days=2))
    assert (
        await admin.run("export", "--opd", "DINKES", "--batch", batch_number, "--out", str(again))
        == 0
    )
    async with runtime.db.begin() as connection:
        opd_id = await connection.scalar(select(Opd.id).where(Opd.code == "DINKES"))
        assert opd_id is not None
        batch = await workbench.batch_by_number(connection, opd_id=opd_id, number=batch_number)
        assert batch is not None
        await workbench.confirm_batch(
            connection, opd_id=opd_id, batch_id=batch.id, actor=Actor.admin("x"), now=clock()
        )
    argv = ("export", "--opd", "DINKES", "--batch", batch_number, "--out", str(submitted))
    assert await admin.run(*argv) == 0
    assert "(submitted): 3 rows" in admin.out
    assert first.read_bytes() == again.read_bytes() == submitted.read_bytes()


async def test_nothing_accepted_writes_nothing(
    admin: Admin, runtime: Runtime, tmp_path: Path
) -> None:
    await seed(runtime, waiting=2)
    out = tmp_path / "kolektif.xlsx"

    assert await admin.run("export", "--opd", "DINKES", "--out", str(out)) == 1

    assert "no accepted enrollments" in admin.err
    assert os.listdir(tmp_path) == []  # no file, no leftover temporary file
    async with runtime.db.connect() as connection:
        assert await connection.scalar(select(func.count()).select_from(SubmissionBatch)) == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--opd", "NOPE"), "no OPD with the code 'NOPE'"),
        (("--opd", "DINKES", "--batch", "DINKES-2026-009"), "has no batch 'DINKES-2026-009'"),
        (("--opd", "DISDIK", "--batch", "DINKES-2026-001"), "has no batch"),  # not theirs
    ],
)
async def test_export_errors(
    admin: Admin, runtime: Runtime, tmp_path: Path, argv: tuple[str, ...], message: str
) -> None:
    await seed(runtime, submitted=1)
    out = tmp_path / "kolektif.xlsx"
    assert await admin.run("export", *argv, "--out", str(out)) == 1
    assert message in admin.err
    assert not out.exists()


async def test_export_into_a_missing_directory(
    admin: Admin, runtime: Runtime, tmp_path: Path
) -> None:
    await seed(runtime, accepted=1)
    out = tmp_path / "missing" / "kolektif.xlsx"
    assert await admin.run("export", "--opd", "DINKES", "--out", str(out)) == 1
    assert f"cannot write {out}" in admin.err
    async with runtime.db.connect() as connection:
        assert await connection.scalar(select(func.count()).select_from(SubmissionBatch)) == 0


# --- import ---------------------------------------------------------------------------------


def kpj_file(tmp_path: Path, lines: list[str], name: str = "kpj.csv") -> Path:
    path = tmp_path / name
    path.write_text("NIK;No. KPJ\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return path


async def test_import_with_yes_applies_and_notifies(
    admin: Admin, runtime: Runtime, tmp_path: Path
) -> None:
    ids = await seed(runtime, submitted=3, waiting=1)
    path = kpj_file(
        tmp_path,
        [
            f"{nik_for(1)};{kpj_for(1)}",
            f"{nik_for(2)};{kpj_for(2)}",
            "3.20101E+15;21000000003",
            f"{nik_for(4)};{kpj_for(4)}",  # still waiting for the PIC
            ";",
        ],
    )

    assert await admin.run("import", "--opd", "DINKES", str(path), "--yes") == 0

    assert "kpj.csv: 4 rows (1 empty rows skipped)" in admin.out
    assert "KPJ numbers to write: 2" in admin.out
    assert "NIK stored as a number (digits lost): 1" in admin.out
    assert "enrollment not yet accepted: 1" in admin.out
    assert f"row 5  {mask_nik(nik_for(4))}  enrollment not yet accepted" in admin.out
    assert "2 KPJ numbers written" in admin.out
    assert nik_for(4) not in admin.out + admin.err
    async with runtime.db.connect() as connection:
        states = (
            await connection.execute(
                select(Sponsorship.id, Sponsorship.status, Sponsorship.kpj).order_by(Sponsorship.id)
            )
        ).all()
        assert [tuple(state) for state in states[:3]] == [
            (ids["submitted"][0], SponsorshipStatus.ACTIVE, kpj_for(1)),
            (ids["submitted"][1], SponsorshipStatus.ACTIVE, kpj_for(2)),
            (ids["submitted"][2], SponsorshipStatus.SUBMITTED, None),
        ]
        assert await connection.scalar(select(KpjImport.status)) == ImportStatus.APPLIED
        actions = await connection.execute(select(AuditLog.action, AuditLog.actor))
        assert sorted(tuple(a) for a in actions) == [
            ("import.apply", ADMIN),
            ("import.preview", ADMIN),
        ]
        notices = await connection.scalars(select(Outbox.kind))
        assert list(notices) == ["card_ready", "card_ready"]


@pytest.mark.parametrize(("answer", "applied"), [("n\n", False), ("\n", False), ("y\n", True)])
async def test_import_asks_before_writing(
    admin: Admin,
    runtime: Runtime,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    answer: str,
    applied: bool,
) -> None:
    await seed(runtime, submitted=1)
    path = kpj_file(tmp_path, [f"{nik_for(1)};{kpj_for(1)}"])
    monkeypatch.setattr("sys.stdin", io.StringIO(answer))

    assert await admin.run("import", "--opd", "DINKES", str(path)) == 0

    assert "apply 1 KPJ numbers? [y/N]" in admin.out
    assert ("1 KPJ numbers written" in admin.out) is applied
    assert ("nothing written" in admin.out) is not applied
    async with runtime.db.connect() as connection:
        assert (await connection.scalar(select(Sponsorship.kpj))) == (
            kpj_for(1) if applied else None
        )
        imports = await connection.scalar(select(func.count()).select_from(KpjImport))
        assert imports == (1 if applied else 0)


async def test_import_without_a_terminal_never_applies(
    admin: Admin, runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await seed(runtime, submitted=1)
    path = kpj_file(tmp_path, [f"{nik_for(1)};{kpj_for(1)}"])
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert await admin.run("import", "--opd", "DINKES", str(path)) == 0
    assert "nothing written" in admin.out


async def test_a_file_sent_again_has_nothing_to_apply(
    admin: Admin, runtime: Runtime, tmp_path: Path
) -> None:
    await seed(runtime, submitted=2)
    path = kpj_file(tmp_path, [f"{nik_for(1)};{kpj_for(1)}", f"{nik_for(2)};{kpj_for(2)}"])
    assert await admin.run("import", "--opd", "DINKES", str(path), "--yes") == 0
    assert await admin.run("import", "--opd", "DINKES", str(path), "--yes") == 0
    assert "already recorded:     2" in admin.out
    assert "nothing to apply" in admin.out


async def test_only_the_first_rejected_rows_are_listed(
    admin: Admin, runtime: Runtime, tmp_path: Path
) -> None:
    await seed(runtime, submitted=1)
    unknown = [f"{nik_for(100 + n)};{kpj_for(100 + n)}" for n in range(SHOWN_REJECTED + 5)]
    path = kpj_file(tmp_path, unknown)
    assert await admin.run("import", "--opd", "DINKES", str(path), "--yes") == 0
    assert f"unknown NIK: {SHOWN_REJECTED + 5}" in admin.out
    assert f"rejected rows (first {SHOWN_REJECTED}, 5 more):" in admin.out
    assert admin.out.count("  row ") == SHOWN_REJECTED
    assert "nothing to apply" in admin.out


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("scan.pdf", b"%PDF-1.7\n", "scan.pdf: not a CSV or XLSX file"),
        ("kpj.csv", b"Nama;KPJ\nSiti;21012345678\n", "no NIK column found in the first 20 rows"),
        ("kpj.csv", b"NIK;Nama\n3201014708900001;Siti\n", "a NIK column but no KPJ column"),
        ("kpj.csv", b"", "the file has no data rows"),
    ],
)
async def test_import_refuses_unusable_files(
    admin: Admin, runtime: Runtime, tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    await seed(runtime, submitted=1)
    path = tmp_path / name
    path.write_bytes(content)
    assert await admin.run("import", "--opd", "DINKES", str(path), "--yes") == 1
    assert message in admin.err
    async with runtime.db.connect() as connection:
        assert await connection.scalar(select(func.count()).select_from(KpjImport)) == 0


async def test_import_of_a_missing_file(admin: Admin, runtime: Runtime, tmp_path: Path) -> None:
    assert await admin.run("import", "--opd", "DINKES", str(tmp_path / "nope.csv")) == 1
    assert "cannot read" in admin.err


async def test_export_of_a_submitted_batch_after_an_erasure_shows_the_row_erased(
    admin: Admin, runtime: Runtime, tmp_path: Path
) -> None:
    ids = await seed(runtime, submitted=3)
    async with runtime.db.connect() as connection:
        erased_worker = await connection.scalar(
            select(Sponsorship.worker_id).where(Sponsorship.id == ids["submitted"][1])
        )
    # The seeded workers share one phone: the administrator names the worker.
    argv = ("worker", "erase", "--phone", "081298765432", "--worker", str(erased_worker))
    assert await admin.run(*argv, "--yes") == 0
    out = tmp_path / "again.xlsx"

    again = ("export", "--opd", "DINKES", "--batch", "DINKES-2026-001", "--out", str(out))
    assert await admin.run(*again) == 0

    assert "(submitted): 3 rows written" in admin.out
    sheet = load_workbook(out, read_only=True).active
    assert sheet is not None
    rows = [list(row) for row in sheet.iter_rows(values_only=True)]
    assert str(rows[HEADER_ROW - 2][0]).startswith("Catatan: 1 baris")
    data = rows[HEADER_ROW:]
    assert [row[1] for row in data] == [nik_for(1), None, nik_for(3)]
    assert [row[2] for row in data] == ["Siti Aminah", ERASED_ROW_NAME, "Siti Aminah"]
    assert data[1][3:8] == [None] * 5  # birth date, sex, phone, village, district
    assert nik_for(2) not in str(rows)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (far_cell_xlsx(), "kpj.xlsx: file refused: too large (a sheet reaches column 16384"),
        (zip_bomb_xlsx(200), "kpj.xlsx: file refused: too large (a part compressed"),
    ],
    ids=["cell-at-XFD999990", "zip-bomb"],
)
async def test_import_of_a_crafted_file_exits_non_zero_with_a_clear_message(
    admin: Admin, runtime: Runtime, tmp_path: Path, content: bytes, message: str
) -> None:
    await seed(runtime, submitted=1)
    path = tmp_path / "kpj.xlsx"
    path.write_bytes(content)
    assert await admin.run("import", "--opd", "DINKES", str(path), "--yes") == 1
    assert message in admin.err
    async with runtime.db.connect() as connection:
        assert await connection.scalar(select(func.count()).select_from(KpjImport)) == 0


async def test_import_of_a_file_over_the_byte_budget_is_refused_unread(
    admin: Admin, runtime: Runtime, tmp_path: Path
) -> None:
    path = tmp_path / "kpj.csv"
    with path.open("wb") as file:  # sparse: no disk, and never read
        file.truncate(DEFAULT_BUDGET.max_file_bytes + 1)
    assert await admin.run("import", "--opd", "DINKES", str(path), "--yes") == 1
    assert "kpj.csv: file refused: too large (64 MiB, over 64 MiB)" in admin.err


async def test_chat_file_and_export_batch_carry_the_same_local_date_after_midnight(
    tmp_path: Path, database_url: str, db_engine: AsyncEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    # Regression (issue 12, item 17): at 00:30 WIB the chat's file was dated
    # the day before (UTC), `sertakan export --batch` the day itself.
    clock = FrozenClock()
    async with open_runtime(tmp_path, database_url, clock=clock, seed_opds=True) as runtime:
        asn = Chat(runtime.engine, clock, sender="1001")
        await asn.register()
        await asn.enroll_until_summary()
        await asn.press("Kirim ke PIC")
        # The worker consents through the Telegram link the ASN got (PRODUCT 4.6).
        link = re.search(r"/start (c_[A-Za-z0-9_-]+)", asn.text)
        assert link is not None
        worker = Chat(runtime.engine, clock, sender="7001")
        await worker.say(f"/start {link.group(1)}")
        await worker.press("YA, saya setuju")
        await appoint_pic(runtime.sessionmaker, clock, telegram_id=PIC_ID, opd_code="BKL-DINKES")
        pic = Chat(runtime.engine, clock, sender=PIC_ID)
        await pic.say("pic")
        await pic.press("Periksa pendaftaran")
        await pic.press("Terima")
        clock.now = datetime(2026, 12, 1, 17, 30, tzinfo=UTC)  # 2 December, 00:30 WIB
        await pic.say("pic")
        await pic.press("Ekspor")
        (document,) = pic.documents
        out = tmp_path / "batch.xlsx"
        argv = ("export", "--opd", "BKL-DINKES", "--batch", "BKL-DINKES-2026-001")
        assert await Admin(runtime, capsys).run(*argv, "--out", str(out)) == 0

    def sheet_date(content: bytes) -> object:
        sheet = load_workbook(io.BytesIO(content), read_only=True).worksheets[0]
        rows = sheet.iter_rows(values_only=True)
        return next(row[1] for row in rows if row and row[0] == DATE_LABEL)

    chat_date = sheet_date(document.content)
    assert chat_date == sheet_date(out.read_bytes())
    assert isinstance(chat_date, datetime) and chat_date.date() == date(2026, 12, 2)


async def test_a_batch_made_at_00_30_wib_on_new_years_day_is_numbered_in_the_new_year(
    admin: Admin, runtime: Runtime, clock: FrozenClock, tmp_path: Path
) -> None:
    await seed(runtime, accepted=1)
    clock.now = datetime(2026, 12, 31, 17, 30, tzinfo=UTC)  # 1 January 2027, 00:30 WIB
    out = tmp_path / "kolektif.xlsx"
    assert await admin.run("export", "--opd", "DINKES", "--out", str(out)) == 0
    assert "batch DINKES-2027-001 (exported)" in admin.out
