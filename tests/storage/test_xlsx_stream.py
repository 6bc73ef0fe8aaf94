"""The streaming XLSX writer: real files, read back by openpyxl and python-calamine."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openpyxl import load_workbook
from openpyxl.cell.cell import Cell as OpenpyxlCell
from openpyxl.worksheet.worksheet import Worksheet
from python_calamine import CalamineWorkbook

from storage.xlsx_stream import (
    BOLD,
    MAX_COLUMNS,
    TEXT,
    Cell,
    CellValue,
    SheetWriter,
    Style,
    column_letter,
    escape_text,
)

CREATED = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
NIK = "3201014708900001"
PHONE = "081298765432"


def workbook(rows: Sequence[Sequence[CellValue | Cell]], **options: Any) -> bytes:
    target = io.BytesIO()
    options.setdefault("created_at", CREATED)
    with SheetWriter(target, **options) as sheet:
        for row in rows:
            sheet.append(row)
    return target.getvalue()


def openpyxl_sheet(content: bytes) -> Worksheet:
    sheet = load_workbook(io.BytesIO(content)).active
    assert isinstance(sheet, Worksheet)
    return sheet


def calamine_rows(content: bytes) -> list[list[Any]]:
    book = CalamineWorkbook.from_filelike(io.BytesIO(content))
    return book.get_sheet_by_index(0).to_python(skip_empty_area=False)


def sheet_xml(content: bytes) -> str:
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        return archive.read("xl/worksheets/sheet1.xml").decode("utf-8")


# --- values --------------------------------------------------------------------------------


def test_values_of_each_kind_read_back_in_both_readers() -> None:
    content = workbook(
        [
            ["text", 7, 2.5, True, date(2026, 12, 1), datetime(2026, 1, 2, 12, 30)],
            [-3, 1e-300, False, None, "last"],
        ]
    )
    sheet = openpyxl_sheet(content)
    assert [cell.value for cell in sheet[1]] == [
        "text",
        7,
        2.5,
        True,
        datetime(2026, 12, 1),
        datetime(2026, 1, 2, 12, 30),
    ]
    assert [cell.value for cell in sheet[2]][:5] == [-3, 1e-300, False, None, "last"]
    assert calamine_rows(content) == [
        ["text", 7, 2.5, True, date(2026, 12, 1), datetime(2026, 1, 2, 12, 30)],
        [-3, 1e-300, False, "", "last", ""],
    ]


def test_text_cells_keep_leading_zeros_and_all_sixteen_digits() -> None:
    content = workbook([[Cell(NIK, TEXT), Cell(PHONE, TEXT), "0001"]])
    nik, phone, plain = openpyxl_sheet(content)[1]
    assert (nik.value, nik.data_type, nik.number_format) == (NIK, "s", "@")
    assert (phone.value, phone.data_type, phone.number_format) == (PHONE, "s", "@")
    assert (plain.value, plain.data_type) == ("0001", "s")
    assert calamine_rows(content) == [[NIK, PHONE, "0001"]]


def test_dates_are_date_cells_with_their_format() -> None:
    content = workbook(
        [[Cell(date(1990, 8, 7), Style("DD/MM/YYYY")), date(2026, 12, 1), date(1900, 1, 15)]]
    )
    birth, plain, early = openpyxl_sheet(content)[1]
    assert isinstance(birth, OpenpyxlCell) and isinstance(plain, OpenpyxlCell)
    assert birth.is_date and birth.number_format == "DD/MM/YYYY"
    assert birth.value == datetime(1990, 8, 7)
    assert plain.is_date and plain.value == datetime(2026, 12, 1)
    # Excel's 1900 system counts a 29 February 1900: serials before March are one lower.
    assert early.value == datetime(1900, 1, 15)
    assert calamine_rows(content) == [[date(1990, 8, 7), date(2026, 12, 1), date(1900, 1, 15)]]


@given(st.dates(min_value=date(1900, 1, 1), max_value=date(9999, 12, 31)))
@settings(max_examples=60, deadline=None)
def test_any_date_from_1900_reads_back(day: date) -> None:
    assert calamine_rows(workbook([[day]])) == [[day]]


def test_dates_before_1900_and_aware_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="1900"):
        workbook([[date(1899, 12, 31)]])
    with pytest.raises(ValueError, match="naive"):
        workbook([[datetime(2026, 1, 1, tzinfo=UTC)]])


@pytest.mark.parametrize("value", [float("nan"), float("inf"), object()])
def test_values_without_a_cell_form_are_refused(value: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        workbook([[value]])


def test_a_styled_empty_cell_keeps_its_style() -> None:
    content = workbook([["a", Cell(None, TEXT), Cell("", TEXT), "", None, "b"]])
    cells = openpyxl_sheet(content)[1]
    assert [cell.value for cell in cells] == ["a", None, None, None, None, "b"]
    assert cells[1].number_format == "@" and cells[2].number_format == "@"
    assert calamine_rows(content) == [["a", "", "", "", "", "b"]]


def test_bold_cells() -> None:
    content = workbook([[Cell("Header", BOLD), "plain"]])
    header, plain = openpyxl_sheet(content)[1]
    assert header.font.b is True
    assert not plain.font.b


# --- text that must stay text --------------------------------------------------------------


HOSTILE = [
    "<r>Sukamaju</r>",
    '<r></t></is></c><c r="Z7"><f>HYPERLINK("http://example.invalid")</f></c><c><is></r>',
    "Desa <b>&amp;</b> 'Kota\"",
    "A & B < C > D",
    '=HYPERLINK("http://example.invalid","klik")',
    "=1+1",
    "+628123",
    "-2+3",
    "@SUM(A1)",
    "#N/A",
    "#DIV/0!",
    "]]>",
    "TRUE",
    "1e5",
    "Siti\tAminah",
    "dua\nbaris",
    "cr\r\nlf",
    "José Müller 李 🙂",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_text_reads_back_exactly_as_text_in_both_readers(text: str) -> None:
    content = workbook([["x", text]])
    cell = openpyxl_sheet(content).cell(1, 2)
    assert (cell.value, cell.data_type) == (text, "s")
    assert calamine_rows(content) == [["x", text]]
    xml = sheet_xml(content)
    assert "<f>" not in xml
    assert xml.count("<c ") == 2


def test_leading_and_trailing_spaces_are_kept() -> None:
    values = ["  two before", "after  ", " both ", "\tTab", "line\n"]
    content = workbook([values])
    assert [cell.value for cell in openpyxl_sheet(content)[1]] == values
    assert calamine_rows(content) == [values]


def test_characters_xml_cannot_hold_are_removed() -> None:
    content = workbook([["Ciawi\x07\x0b", "\x00a\x1fb\x0c", "ok\ufffe", "\ud800x", "\x01 b "]])
    kept = ["Ciawi", "ab", "ok", "x", " b "]
    assert [cell.value for cell in openpyxl_sheet(content)[1]] == kept
    assert calamine_rows(content) == [kept]


def test_text_shaped_like_an_excel_escape_is_escaped() -> None:
    # Excel decodes _xHHHH_ in strings; calamine does as Excel does (openpyxl does not).
    values = ["_x0041_", "a_x000D_b", "_x41_", "_x005F_x0041_", "_x0041_x0042_", "__x0041__"]
    assert calamine_rows(workbook([values])) == [values]


@given(st.text(alphabet="_x05Fa", min_size=1, max_size=30))
@settings(max_examples=100, deadline=None)
def test_any_run_of_underscores_and_hex_digits_reads_back(text: str) -> None:
    assert calamine_rows(workbook([[text, "end"]])) == [[text, "end"]]


def test_escape_text() -> None:
    assert escape_text("plain text 123") == "plain text 123"
    assert escape_text('<a href="x">&\'</a>') == (
        "&lt;a href=&quot;x&quot;&gt;&amp;&apos;&lt;/a&gt;"
    )
    assert escape_text("a\x01b\rc") == "ab&#13;c"


@given(st.text(max_size=60))
@settings(max_examples=150, deadline=None)
def test_any_text_reads_back_without_the_characters_xml_cannot_hold(text: str) -> None:
    kept = "".join(
        char
        for char in text
        if char in "\t\n\r" or (char >= " " and char not in "\ufffe\uffff")
        if not 0xD800 <= ord(char) <= 0xDFFF
    )
    content = workbook([[text, "end"]])
    assert calamine_rows(content) == [[kept, "end"]]
    assert openpyxl_sheet(content)["A1"].value == (kept or None)


def test_too_long_text_is_refused() -> None:
    workbook([["a" * 32_767]])
    with pytest.raises(ValueError, match="32767"):
        workbook([["a" * 32_768]])


# --- the sheet -----------------------------------------------------------------------------


def test_empty_rows_keep_the_row_numbers() -> None:
    content = workbook([["first"], [], [None, None], ["fourth"]])
    sheet = openpyxl_sheet(content)
    assert sheet["A1"].value == "first"
    assert sheet["A4"].value == "fourth"
    assert sheet.max_row == 4
    assert calamine_rows(content) == [["first"], [""], [""], ["fourth"]]


def test_an_empty_sheet() -> None:
    content = workbook([], sheet_name="Kosong")
    book = load_workbook(io.BytesIO(content))
    assert book.sheetnames == ["Kosong"]
    sheet = book.active
    assert isinstance(sheet, Worksheet)
    assert sheet.max_row == 1 and sheet["A1"].value is None
    assert CalamineWorkbook.from_filelike(io.BytesIO(content)).sheet_names == ["Kosong"]
    assert calamine_rows(content) == []


def test_widths_frozen_rows_sheet_name_and_properties() -> None:
    content = workbook(
        [["a", "b", "c"], [1, 2, 3]],
        sheet_name="Peserta & Co",
        column_widths=[6, None, 32.5],
        freeze_rows=1,
        title="Batch <1>",
        creator="SERTAKAN",
    )
    book = load_workbook(io.BytesIO(content))
    assert book.sheetnames == ["Peserta & Co"]
    assert book.properties.title == "Batch <1>"
    assert book.properties.creator == "SERTAKAN"
    assert book.properties.created == datetime(2026, 11, 21, 3, 0)
    assert book.properties.modified == datetime(2026, 11, 21, 3, 0)
    sheet = book.active
    assert isinstance(sheet, Worksheet)
    assert sheet.freeze_panes == "A2"
    assert sheet.column_dimensions["A"].width == 6
    assert sheet.column_dimensions["C"].width == 32.5


def test_columns_beyond_z() -> None:
    row: list[CellValue] = [None] * 27
    row.append("AB")
    content = workbook([row])
    assert openpyxl_sheet(content)["AB1"].value == "AB"
    assert (column_letter(1), column_letter(26), column_letter(27)) == ("A", "Z", "AA")
    assert column_letter(MAX_COLUMNS) == "XFD"
    with pytest.raises(ValueError):
        column_letter(MAX_COLUMNS + 1)


@pytest.mark.parametrize("name", ["", "a" * 32, "a/b", "x[1]", "what?"])
def test_invalid_sheet_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="sheet name"):
        SheetWriter(io.BytesIO(), sheet_name=name)


def test_a_naive_creation_time_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        SheetWriter(io.BytesIO(), created_at=datetime(2026, 1, 1))


def test_appending_after_close_is_refused() -> None:
    writer = SheetWriter(io.BytesIO())
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.append(["late"])


# --- the archive ---------------------------------------------------------------------------


def test_the_archive_is_sound_and_holds_the_minimal_parts() -> None:
    content = workbook([[Cell("a", BOLD), 1, date(2026, 1, 1)]] * 2000)
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        assert archive.testzip() is None
        assert sorted(archive.namelist()) == [
            "[Content_Types].xml",
            "_rels/.rels",
            "docProps/app.xml",
            "docProps/core.xml",
            "xl/_rels/workbook.xml.rels",
            "xl/styles.xml",
            "xl/workbook.xml",
            "xl/worksheets/sheet1.xml",
        ]
        assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_DEFLATED}


def test_the_same_calls_give_the_same_bytes() -> None:
    rows: list[list[CellValue | Cell]] = [
        [i, Cell(f"{i:016d}", TEXT), f"name {i}", date(2000, 1, 1 + i % 28)] for i in range(300)
    ]
    first = workbook(rows)
    assert workbook([list(row) for row in rows]) == first
    assert workbook(rows, created_at=CREATED + timedelta(seconds=2)) != first
    assert workbook(rows[:-1]) != first


def test_entry_times_come_from_the_creation_time_in_utc() -> None:
    created = datetime(2025, 1, 2, 10, 4, 6, tzinfo=timezone(timedelta(hours=7)))
    for when, expected in [(created, (2025, 1, 2, 3, 4, 6)), (None, (1980, 1, 1, 0, 0, 0))]:
        with zipfile.ZipFile(io.BytesIO(workbook([["a"]], created_at=when))) as archive:
            assert {info.date_time for info in archive.infolist()} == {expected}
            assert {info.external_attr for info in archive.infolist()} == {0o600 << 16}
            core = archive.read("docProps/core.xml").decode()
        assert core.count("2025-01-02T03:04:06Z") == (2 if when else 0)


def test_zip64_on_request_still_reads_back() -> None:
    content = workbook([[NIK, 1]], zip64=True)
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        assert archive.testzip() is None
    assert calamine_rows(content) == [[NIK, 1]]
    assert openpyxl_sheet(content)["A1"].value == NIK


def test_a_failure_inside_the_block_leaves_no_workbook() -> None:
    target = io.BytesIO()
    with pytest.raises(RuntimeError, match="gone"), SheetWriter(target) as sheet:
        sheet.append(["written"])
        raise RuntimeError("gone")
    with zipfile.ZipFile(io.BytesIO(target.getvalue())) as archive:
        assert "[Content_Types].xml" not in archive.namelist()
