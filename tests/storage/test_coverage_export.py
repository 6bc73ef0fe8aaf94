"""The coverage download (CSV and XLSX) holds the dashboard's numbers, read back."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime

import openpyxl
from python_calamine import CalamineWorkbook

from domain.dues import PaidStanding
from domain.vocabulary import Language, SponsorshipStatus
from handlers.i18n import Catalogs
from storage.collective_file import csv_unescape
from storage.coverage import (
    AreaRow,
    CoverageDashboard,
    OpdRow,
    Progress,
    Tiles,
    WeekPoint,
)
from storage.coverage_export import ENGLISH, coverage_csv, coverage_rows, coverage_xlsx

S = SponsorshipStatus
HOSTILE = '=HYPERLINK("http://evil.example","klik")'


def statuses(**counts: int) -> dict[SponsorshipStatus, int]:
    return {status: counts.get(status.value, 0) for status in SponsorshipStatus}


def standings(**counts: int) -> dict[PaidStanding, int]:
    return {standing: counts.get(standing.value, 0) for standing in PaidStanding}


def province() -> CoverageDashboard:
    dinkes = OpdRow(
        opd_id=1,
        opd_code="DINKES",
        opd_name="Dinas Kesehatan",
        asn_registered=3,
        asn_sponsoring=2,
        by_status=statuses(waiting_for_pic=1, active=2, card_handed_over=1, ended=1),
        paid=standings(paid_ahead=1, up_to_date=1, arrears_2=1),
        target=4,
    )
    hostile = OpdRow(
        opd_id=2,
        opd_code="-X",
        opd_name=HOSTILE,
        asn_registered=1,
        asn_sponsoring=0,
        by_status=statuses(lapsed=1),
        paid=standings(),
        target=None,
    )
    return CoverageDashboard(
        today=date(2027, 1, 6),
        opd_id=None,
        scope_name=None,
        tiles=Tiles(
            asn_registered=4,
            asn_sponsoring=2,
            workers_by_status=statuses(
                waiting_for_pic=1, active=2, card_handed_over=1, lapsed=1, ended=1
            ),
            active_cards=3,
            dues_bearing=3,
            paid_up=2,
        ),
        progress=Progress(reached=3, target=10),
        weeks=(
            WeekPoint(date(2026, 12, 28), enrollments=1, cards=1, lapses=1),
            WeekPoint(date(2027, 1, 4), enrollments=2, cards=0, lapses=0),
        ),
        paid=standings(paid_ahead=1, up_to_date=1, arrears_2=1),
        opds=(dinkes, hostile),
        areas=(
            AreaRow("Bogor", "Ciawi", "@Sukamaju", statuses(active=2, lapsed=1)),
            AreaRow("", "", "", statuses(ended=1), erased=True),
        ),
    )


def section(rows: list[list[str]], title: str) -> list[list[str]]:
    """The rows of the section titled `title`, header first, up to the blank row."""
    start = next(index for index, row in enumerate(rows) if row[:1] == [title]) + 1
    end = next((index for index in range(start, len(rows)) if not any(rows[index])), len(rows))
    return rows[start:end]


def test_csv_reads_back_with_every_section_and_escaped_text() -> None:
    content = coverage_csv(province())

    assert content.startswith(b"\xef\xbb\xbf")  # a spreadsheet reads the accents
    rows = list(csv.reader(io.StringIO(content.decode("utf-8-sig"), newline="")))
    assert rows[0] == ["Coverage", "Province (all OPDs)"]
    assert rows[1] == ["As of", "2027-01-06"]
    summary = {row[0]: row[1] for row in section(rows, "Summary")[1:]}
    assert summary["ASN registered"] == "4"
    assert summary["ASN sponsoring"] == "2"
    assert summary["lapsed (dues unpaid)"] == "1"
    assert summary["Active cards"] == "3"
    assert summary["Paid-up share"] == "0.6667"
    assert (summary["Target (workers)"], summary["Target reached"]) == ("10", "0.3")

    opds = section(rows, "Per OPD")
    header = opds[0]
    assert header[:4] == ["OPD code", "OPD", "ASN registered", "ASN sponsoring"]
    assert header[-3:] == ["Paid-up share", "Target (workers)", "Target reached"]
    lines = {row[0]: dict(zip(header, row, strict=True)) for row in opds[1:]}
    assert list(lines) == ["DINKES", "'-X", ""]  # the total line last, without a code
    dinkes = lines["DINKES"]
    assert (dinkes["Workers"], dinkes["Active cards"], dinkes["2 months overdue"]) == (
        "5",
        "3",
        "1",
    )
    assert (dinkes["Target (workers)"], dinkes["Target reached"]) == ("4", "0.75")
    # Formula-looking text is written after an apostrophe, and comes back as typed.
    hostile = lines["'-X"]
    assert hostile["OPD"] == "'" + HOSTILE
    assert csv_unescape(hostile["OPD"]) == HOSTILE
    assert (hostile["Target (workers)"], hostile["Target reached"]) == ("", "")
    total = lines[""]
    assert (total["OPD"], total["Workers"], total["Target (workers)"]) == ("All OPDs", "6", "10")

    areas = section(rows, "Per village")
    assert areas[1][:3] == ["Bogor", "Ciawi", "'@Sukamaju"]
    assert areas[2][:3] == ["", "", "(erased workers)"]
    assert areas[2][-2:] == ["1", "0"]  # one worker, no active card
    assert section(rows, "Per week")[1:] == [
        ["2026-12-28", "1", "1", "1"],
        ["2027-01-04", "2", "0", "0"],
    ]
    assert section(rows, "Paid-until (dues-bearing workers)")[1:] == [
        ["paid ahead", "1"],
        ["up to date", "1"],
        ["1 month overdue", "0"],
        ["2 months overdue", "1"],
        ["3 or more months overdue", "0"],
    ]


def test_xlsx_holds_the_same_cells_and_no_formula() -> None:
    board = province()
    content = coverage_xlsx(board)

    sheet = openpyxl.load_workbook(io.BytesIO(content)).active
    assert sheet is not None
    cells = [[cell.value for cell in row] for row in sheet.iter_rows()]
    expected = coverage_rows(board)
    assert len(cells) == len(expected)
    name_cell = next(row for row in sheet.iter_rows() if row[0].value == "-X")[1]
    assert (name_cell.value, name_cell.data_type) == (HOSTILE, "s")  # text, not a formula
    dinkes = next(row for row in cells if row[0] == "DINKES")
    assert dinkes[:4] == ["DINKES", "Dinas Kesehatan", 3, 2]
    assert dinkes[-2:] == [4, 0.75]
    summary = {row[0]: row[1] for row in cells if row and row[0] is not None}
    as_of = summary["As of"]
    assert isinstance(as_of, datetime) and as_of.date() == date(2027, 1, 6)  # a date, not text
    assert summary["Paid-up share"] == 0.6667
    # The same bytes for the same dashboard (the workbook's time is the report's day).
    assert coverage_xlsx(board) == content
    # python-calamine, the reader the bot uses for uploads, reads it too.
    rows = CalamineWorkbook.from_filelike(io.BytesIO(content)).get_sheet_by_index(0).to_python()
    assert any(row[:2] == ["-X", HOSTILE] for row in rows)


def test_indonesian_labels_from_the_catalogue() -> None:
    t = Catalogs().translator(Language.INDONESIAN)
    rows = list(
        csv.reader(io.StringIO(coverage_csv(province(), t).decode("utf-8-sig"), newline=""))
    )
    assert rows[0] == ["Cakupan", "Provinsi (semua OPD)"]
    assert section(rows, "Per OPD")[0][:2] == ["Kode OPD", "OPD"]
    assert section(rows, "Per desa/kelurahan")[2][2] == "(pekerja yang datanya dihapus)"
    sheet = openpyxl.load_workbook(io.BytesIO(coverage_xlsx(province(), t))).active
    assert sheet is not None
    assert (sheet.title, sheet["A1"].value) == ("Cakupan", "Cakupan")


def test_the_built_in_english_labels_are_the_english_catalogue() -> None:
    english = Catalogs().messages(Language.ENGLISH)
    assert {key: english[key] for key in ENGLISH} == ENGLISH


def test_one_opd_download_names_it_and_has_no_total_line() -> None:
    board = province()
    single = CoverageDashboard(
        today=board.today,
        opd_id=1,
        scope_name="Dinas Kesehatan",
        tiles=board.tiles,
        progress=Progress(reached=3, target=4),
        weeks=(),
        paid=board.paid,
        opds=board.opds[:1],
        areas=(),
    )
    rows = list(csv.reader(io.StringIO(coverage_csv(single).decode("utf-8-sig"), newline="")))
    assert rows[0] == ["Coverage", "Dinas Kesehatan"]
    assert [row[0] for row in section(rows, "Per OPD")[1:]] == ["DINKES"]
    assert section(rows, "Per week") == [["Week from", "Enrollments", "Cards issued", "Lapses"]]
