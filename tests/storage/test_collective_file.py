"""The collective XLSX (out) and the KPJ file (in): real files, written and read back."""

from __future__ import annotations

import csv
import io
import random
import tempfile
import zipfile
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openpyxl import Workbook, load_workbook
from openpyxl.cell.cell import Cell
from python_calamine import CalamineWorkbook

from domain.vocabulary import Occupation, PaymentPlan, Relationship, Sex
from storage.collective_file import (
    COLLECTIVE_HEADERS,
    HEADER_ROW,
    CollectiveRow,
    CollectiveWriter,
    FileBudget,
    FileProblem,
    KpjFileError,
    KpjRow,
    NikCellProblem,
    erased_row,
    read_collective_csv,
    read_kpj_file,
    write_collective_csv,
    write_collective_xlsx,
)
from tests.fakes.hostile_files import far_cell_xlsx, sheet_xml, workbook, zip_bomb_xlsx

CREATED = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
NIK_A = "3201014708900001"
NIK_B = "1771010101800003"
NIK_C = "3201020202020202"
KPJ_A = "21012345678"
KPJ_B = "21012345679"


def collective_row(index: int = 0, **changes: Any) -> CollectiveRow:
    values: dict[str, Any] = {
        "nik": f"3201{index:012d}",
        "full_name": f"Siti Aminah {index}",
        "birth_date": date(1990, 8, 7),
        "sex": Sex.FEMALE,
        "phone_e164": "+6281298765432",
        "birth_place": "Bogor",
        "street_address": "Jl. Melati No. 5",
        "village": "Sukamaju",
        "district": "Ciawi",
        "regency": "Kabupaten Bogor",
        "occupation": Occupation.HOUSEHOLD_ASSISTANT,
        "relationship": Relationship.EMPLOYEE,
        "sponsor_nip": "198503122010011002",
        "sponsor_name": "Budi Santoso",
        "plan": PaymentPlan.QUARTERLY,
        "first_month": date(2026, 12, 1),
    }
    values.update(changes)
    return CollectiveRow(**values)


def col(header: str) -> int:
    """The 1-based column of `header` in the shipped column map."""
    return COLLECTIVE_HEADERS.index(header) + 1


def first_row(birth: date | datetime) -> list[Any]:
    """`collective_row(1)` as the sheet holds it in the shipped columns."""
    return [
        1,
        "3201000000000001",
        "Siti Aminah 1",
        "Bogor",
        birth,
        "P",
        "081298765432",
        "Jl. Melati No. 5",
        "Sukamaju",
        "Ciawi",
        "Kabupaten Bogor",
        "Kabupaten Bogor",
        "Asisten rumah tangga",
        "Bekerja untuk rumah tangga ASN",
        1_000_000,
        "JKK+JKM",
        "198503122010011002",
        "Budi Santoso",
        "Tiga bulanan",
        type(birth)(2026, 12, 1),
    ]


def export(
    rows: Sequence[CollectiveRow],
    *,
    batch_number: str = "DINKES-2026-001",
    created_at: datetime = CREATED,
) -> bytes:
    target = io.BytesIO()
    written = write_collective_xlsx(
        rows,
        target,
        batch_number=batch_number,
        opd_name="Dinas Kesehatan",
        created_at=created_at,
    )
    assert written == len(rows)
    return target.getvalue()


def xlsx(*sheets: Sequence[Sequence[Any]], titles: Sequence[str] = ()) -> bytes:
    """An XLSX with one sheet per list of rows (None cells stay empty)."""
    workbook = Workbook()
    workbook.remove(workbook.active)  # type: ignore[arg-type]
    for index, rows in enumerate(sheets):
        sheet = workbook.create_sheet(titles[index] if index < len(titles) else f"S{index}")
        for row in rows:
            sheet.append(list(row))
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def read(name: str, content: bytes, **kwargs: Any) -> tuple[list[KpjRow], int]:
    return read_kpj_file(name, content, **kwargs)


def refused(name: str, content: bytes, **kwargs: Any) -> KpjFileError:
    with pytest.raises(KpjFileError) as caught:
        read_kpj_file(name, content, **kwargs)
    return caught.value


# --- the collective file ------------------------------------------------------------------


def test_the_collective_file_has_a_title_block_headers_and_one_row_per_enrollment() -> None:
    rows = [
        collective_row(1),
        collective_row(
            2,
            sex=Sex.MALE,
            phone_e164=None,
            occupation=Occupation.OJOL_RIDER,
            plan=PaymentPlan.PAYROLL_DEDUCTION,
            first_month=date(2027, 1, 1),
        ),
    ]
    sheet = load_workbook(io.BytesIO(export(rows))).active
    assert sheet is not None
    assert sheet["A2"].value == "Nomor Batch"
    assert sheet["B2"].value == "DINKES-2026-001"
    assert sheet["B3"].value == "Dinas Kesehatan"
    assert sheet["B4"].value == datetime(2026, 11, 21)
    header = [cell.value for cell in sheet[HEADER_ROW]]
    assert tuple(header) == COLLECTIVE_HEADERS
    first = [cell.value for cell in sheet[HEADER_ROW + 1]]
    assert first == first_row(datetime(1990, 8, 7))
    second = [cell.value for cell in sheet[HEADER_ROW + 2]]
    assert second[0] == 2
    assert second[col("Jenis Kelamin (L/P)") - 1] == "L"
    assert second[col("No. HP") - 1] is None  # no phone
    assert second[col("Jenis Pekerjaan") - 1] == "Pengemudi ojek online"
    assert second[col("Cara Bayar") - 1] == "Potong gaji (bendahara)"
    assert second[col("Bulan Pertama Kepesertaan") - 1] == datetime(2027, 1, 1)
    assert sheet.max_row == HEADER_ROW + 2


def test_nik_phone_and_nip_are_text_cells_and_dates_are_dates() -> None:
    sheet = load_workbook(io.BytesIO(export([collective_row(7)]))).active
    assert sheet is not None
    data = HEADER_ROW + 1
    nik, birth, phone, nip, month = (
        sheet.cell(data, col(header))
        for header in (
            "NIK",
            "Tanggal Lahir",
            "No. HP",
            "NIP ASN Penanggung",
            "Bulan Pertama Kepesertaan",
        )
    )
    assert isinstance(birth, Cell) and isinstance(month, Cell)
    assert (nik.data_type, nik.number_format) == ("s", "@")
    assert phone.data_type == "s"
    assert nip.data_type == "s"
    assert birth.is_date and birth.number_format == "DD/MM/YYYY"
    assert month.is_date and month.number_format == "MM/YYYY"


def test_the_collective_file_reads_back_in_calamine_and_is_a_sound_zip() -> None:
    rows = [collective_row(1), collective_row(2, phone_e164=None, full_name=" =1+1 ")]
    content = export(rows)
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        assert archive.testzip() is None
    book = CalamineWorkbook.from_filelike(io.BytesIO(content))
    assert book.sheet_names == ["Peserta"]
    table = book.get_sheet_by_index(0).to_python(skip_empty_area=False)
    assert table[1][:2] == ["Nomor Batch", "DINKES-2026-001"]
    assert table[3][:2] == ["Tanggal", date(2026, 11, 21)]
    assert tuple(table[HEADER_ROW - 1]) == COLLECTIVE_HEADERS
    assert table[HEADER_ROW] == first_row(date(1990, 8, 7))
    assert table[HEADER_ROW + 1][1:7] == [
        "3201000000000002",
        " =1+1 ",
        "Bogor",
        date(1990, 8, 7),
        "P",
        "",
    ]
    assert len(table) == HEADER_ROW + 2


def test_the_header_is_bold_frozen_and_the_columns_have_widths() -> None:
    sheet = load_workbook(io.BytesIO(export([collective_row(1)]))).active
    assert sheet is not None
    assert all(cell.font.b for cell in sheet[HEADER_ROW])
    assert sheet["A1"].font.b and sheet["A2"].font.b
    assert not sheet.cell(HEADER_ROW + 1, 3).font.b
    assert sheet.freeze_panes == f"A{HEADER_ROW + 1}"
    assert sheet.column_dimensions["B"].width == 20


def test_a_file_written_in_chunks_is_the_file_written_at_once() -> None:
    rows = [collective_row(i) for i in range(1, 8)]
    target = io.BytesIO()
    with CollectiveWriter(
        target, batch_number="DINKES-2026-001", opd_name="Dinas Kesehatan", created_at=CREATED
    ) as writer:
        assert writer.write(rows[:3]) == 3
        assert writer.write([]) == 0
        assert writer.write(rows[3:]) == 4
    assert writer.rows_written == 7
    assert target.getvalue() == export(rows)


def test_a_name_that_looks_like_a_formula_stays_text() -> None:
    hostile = '=HYPERLINK("http://example.invalid","klik")'
    rows = [collective_row(1, full_name=hostile, village="#N/A", district="Ciawi\x07\x0b")]
    sheet = load_workbook(io.BytesIO(export(rows))).active
    assert sheet is not None
    name = sheet.cell(HEADER_ROW + 1, 3)
    assert name.data_type == "s"
    assert name.value == hostile
    assert sheet.cell(HEADER_ROW + 1, col("Desa/Kelurahan")).data_type == "s"
    # Control characters cannot be stored in XLSX: dropped, the rest kept.
    assert sheet.cell(HEADER_ROW + 1, col("Kecamatan")).value == "Ciawi"


@pytest.mark.parametrize(
    "place",
    [
        "<r>Sukamaju</r>",
        '<r></t></is></c><c r="Z7"><f>HYPERLINK("http://example.invalid")</f></c><c><is></r>',
        "Desa <b>&amp;</b> 'Kota\"",
    ],
)
def test_a_place_that_looks_like_xml_stays_text(place: str) -> None:
    content = export([collective_row(1, village=place, district=place)])
    sheet = load_workbook(io.BytesIO(content)).active
    assert sheet is not None
    village = col("Desa/Kelurahan")
    for column in (village, village + 1):
        assert sheet.cell(HEADER_ROW + 1, column).value == place
    table = CalamineWorkbook.from_filelike(io.BytesIO(content)).get_sheet_by_index(0).to_python()
    assert table[HEADER_ROW][village - 1 : village + 1] == [place, place]
    assert sheet.max_column == len(COLLECTIVE_HEADERS)
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        assert "<f>" not in archive.read("xl/worksheets/sheet1.xml").decode()


def test_the_same_batch_gives_the_same_bytes() -> None:
    rows = [collective_row(i) for i in range(50)]
    first = export(rows)
    again = export(list(rows))
    assert first == again
    assert export(rows, created_at=CREATED + timedelta(days=1)) != first
    assert export(rows, batch_number="DINKES-2026-002") != first


def test_the_file_carries_the_batch_time_not_the_clock() -> None:
    # Document properties and zip entries carry a time: both must come from
    # created_at, or a re-export would differ.
    created = datetime(2025, 1, 2, 10, 4, 6, tzinfo=timezone(timedelta(hours=7)))
    content = export([collective_row(1)], created_at=created)
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        times = {info.date_time for info in archive.infolist()}
        modes = {info.external_attr for info in archive.infolist()}
        core = archive.read("docProps/core.xml").decode()
    assert times == {(2025, 1, 2, 3, 4, 6)}  # UTC
    assert modes == {0o600 << 16}
    assert core.count("2025-01-02T03:04:06Z") == 2  # created and modified
    sheet = load_workbook(io.BytesIO(content)).active
    assert sheet is not None
    assert sheet["B4"].value == datetime(2025, 1, 2)  # the date in the zone given


def test_a_batch_without_rows_is_a_file_with_headers_only() -> None:
    content = export([])
    sheet = load_workbook(io.BytesIO(content)).active
    assert sheet is not None
    assert tuple(cell.value for cell in sheet[HEADER_ROW]) == COLLECTIVE_HEADERS
    assert sheet.max_row == HEADER_ROW


def test_rows_are_taken_from_any_iterable_once() -> None:
    consumed: list[int] = []

    def generated() -> Any:
        for index in range(5):
            consumed.append(index)
            yield collective_row(index)

    target = io.BytesIO()
    written = write_collective_xlsx(
        generated(), target, batch_number="B", opd_name="O", created_at=CREATED
    )
    assert written == 5
    assert consumed == [0, 1, 2, 3, 4]


class FullDisk(io.BytesIO):
    """A target that takes 1,000 bytes and then fails like a full disk."""

    def write(self, data: Any) -> int:
        if self.tell() + len(data) > 1000:
            raise OSError(28, "No space left on device")
        return super().write(data)


def test_a_failed_export_leaves_no_temporary_file_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The temporary sheet file holds every row written so far, full NIKs included.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def failing() -> Any:
        yield collective_row(1)
        raise ConnectionError("database gone")

    with pytest.raises(ConnectionError):
        write_collective_xlsx(
            failing(), io.BytesIO(), batch_number="B", opd_name="O", created_at=CREATED
        )
    assert list(tmp_path.iterdir()) == []
    rows = [collective_row(i) for i in range(200)]
    with pytest.raises(OSError, match="No space"):
        write_collective_xlsx(rows, FullDisk(), batch_number="B", opd_name="O", created_at=CREATED)
    assert list(tmp_path.iterdir()) == []
    export(rows)  # and a successful one neither
    assert list(tmp_path.iterdir()) == []


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        write_collective_xlsx(
            [], io.BytesIO(), batch_number="B", opd_name="O", created_at=datetime(2026, 1, 1)
        )


def test_the_exported_file_with_a_kpj_column_added_reads_back_exactly() -> None:
    # What BPJS is likely to do: fill a KPJ column into the file they received.
    rows = [collective_row(i) for i in range(1, 4)]
    workbook = load_workbook(io.BytesIO(export(rows)))
    sheet = workbook.active
    assert sheet is not None
    sheet.cell(HEADER_ROW, 14, "No. KPJ")
    for offset in range(3):
        sheet.cell(HEADER_ROW + 1 + offset, 14, 21000000000 + offset)  # typed as numbers
    edited = io.BytesIO()
    workbook.save(edited)

    read_rows, empty = read("kolektif.xlsx", edited.getvalue())
    assert empty == 0
    assert [(r.row_number, r.nik, r.kpj_raw) for r in read_rows] == [
        (HEADER_ROW + 1, "3201000000000001", "21000000000"),
        (HEADER_ROW + 2, "3201000000000002", "21000000001"),
        (HEADER_ROW + 3, "3201000000000003", "21000000002"),
    ]
    assert read_rows[0].nik_shown == "3201********0001"


def test_the_exported_file_as_is_has_no_kpj_column() -> None:
    error = refused("kolektif.xlsx", export([collective_row(1)]))
    assert error.problem is FileProblem.NO_KPJ_COLUMN
    assert "NIK" in error.detail and "Nama Lengkap (sesuai KTP)" in error.detail


# --- the KPJ file: formats ----------------------------------------------------------------


def test_a_plain_comma_csv() -> None:
    content = f"NIK,KPJ\n{NIK_A},{KPJ_A}\n{NIK_B},{KPJ_B}\n".encode()
    rows, empty = read("kpj.csv", content)
    assert empty == 0
    assert rows == [
        KpjRow(2, NIK_A, None, "3201********0001", KPJ_A),
        KpjRow(3, NIK_B, None, "1771********0003", KPJ_B),
    ]


@pytest.mark.parametrize("delimiter", [";", "\t", ","])
def test_the_delimiter_is_found_from_the_header(delimiter: str) -> None:
    lines = [["Nama", "No. KPJ", "NIK KTP"], ["Siti, S.Pd", KPJ_A, NIK_A]]
    text = "\r\n".join(
        delimiter.join(f'"{cell}"' if delimiter in cell else cell for cell in line)
        for line in lines
    )
    rows, _ = read("kpj.txt", text.encode())
    assert [(r.nik, r.kpj_raw) for r in rows] == [(NIK_A, KPJ_A)]


@pytest.mark.parametrize(
    ("encoding", "bom"),
    [("utf-8", b""), ("utf-8", b"\xef\xbb\xbf"), ("cp1252", b""), ("utf-16", b"")],
)
def test_text_encodings(encoding: str, bom: bytes) -> None:
    # Excel's "CSV UTF-8" has a BOM, older Excel writes cp1252, "Unicode text" is UTF-16 + tab.
    delimiter = "\t" if encoding == "utf-16" else ";"
    text = delimiter.join(["NIK", "Nama", "KPJ"]) + "\n"
    text += delimiter.join([NIK_A, "José Müller", KPJ_A]) + "\n"
    rows, _ = read("kpj.csv", bom + text.encode(encoding))
    assert [(r.nik, r.kpj_raw) for r in rows] == [(NIK_A, KPJ_A)]


def test_an_xlsx_with_title_rows_above_the_header() -> None:
    content = xlsx(
        [
            ["Daftar KPJ Peserta BPU"],
            ["Kantor Cabang Bengkulu"],
            [],
            ["No", "Nomor Induk Kependudukan (NIK)", "Nama", "Nomor Kartu Peserta"],
            [1, NIK_A, "Siti", KPJ_A],
            [2, NIK_B, "Budi", KPJ_B],
        ]
    )
    rows, empty = read("hasil.xlsx", content)
    assert empty == 0
    assert [(r.row_number, r.nik, r.kpj_raw) for r in rows] == [
        (5, NIK_A, KPJ_A),
        (6, NIK_B, KPJ_B),
    ]


def test_the_first_sheet_with_a_nik_column_is_used() -> None:
    content = xlsx(
        [["Catatan"], ["File ini berisi KPJ"]],
        [["nik_ktp", "KPJ Number"], [NIK_A, KPJ_A]],
        titles=["Info", "Data"],
    )
    rows, _ = read("hasil.xlsx", content)
    assert [(r.row_number, r.nik, r.kpj_raw) for r in rows] == [(2, NIK_A, KPJ_A)]


@pytest.mark.parametrize(
    ("nik_header", "kpj_header"),
    [
        ("NIK", "KPJ"),
        ("  nik  ", "kpj"),
        ("No NIK", "No. KPJ"),
        ("NOMOR_NIK", "NOMOR-KPJ"),
        ("No. KTP", "No Kartu"),
        ("NIK (16 digit)", "Nomor Kartu Peserta"),
        ("Nomor Induk Kependudukan", "kpj_number"),
    ],
)
def test_column_names_are_matched_flexibly(nik_header: str, kpj_header: str) -> None:
    rows, _ = read("kpj.csv", f'"{kpj_header}";"{nik_header}"\n{KPJ_A};{NIK_A}\n'.encode())
    assert [(r.nik, r.kpj_raw) for r in rows] == [(NIK_A, KPJ_A)]


# --- the KPJ file: bad cells ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "shown"),
    [
        ("3.20101E+15", "3.20101E+15"),
        ("3,20101E+15", "3,20101E+15"),
        ("3E15", "3E15"),
        ("3.201014708900E+015", "3.201********0E+015"),  # many digits: masked like a NIK
    ],
)
def test_a_nik_in_scientific_notation_in_a_csv_is_never_guessed(cell: str, shown: str) -> None:
    content = f'NIK;KPJ\n"{cell}";{KPJ_A}\n'.encode()
    (row,), _ = read("kpj.csv", content)
    assert row.nik is None
    assert row.nik_problem is NikCellProblem.SCIENTIFIC
    assert row.nik_shown == shown


@pytest.mark.parametrize("number", [3201014708900001, 3201014708900000, 3.2010147089e15])
def test_a_nik_stored_as_a_number_in_an_xlsx_is_never_guessed(number: float) -> None:
    (row,), _ = read("kpj.xlsx", xlsx([["NIK", "KPJ"], [number, int(KPJ_A)]]))
    assert row.nik is None
    assert row.nik_problem is NikCellProblem.SCIENTIFIC
    assert row.nik_shown == "3.20101E+15"
    assert row.kpj_raw == KPJ_A  # an 11-digit number is exact


@pytest.mark.parametrize(
    ("cell", "problem", "shown"),
    [
        ("", NikCellProblem.EMPTY, ""),
        ("3201O14708900001", NikCellProblem.NON_DIGIT, "3201O*******0001"),
        ("belum ada", NikCellProblem.NON_DIGIT, "belum ada"),
        ("320101470890001", NikCellProblem.LENGTH, "3201*******0001"),
        ("32010147", NikCellProblem.LENGTH, "32010147"),
    ],
)
def test_unreadable_nik_cells(cell: str, problem: NikCellProblem, shown: str) -> None:
    (row,), _ = read("kpj.csv", f"NIK,KPJ,Nama\n{cell},{KPJ_A},Siti\n".encode())
    assert (row.nik, row.nik_problem, row.nik_shown) == (None, problem, shown)


def test_a_long_bad_cell_is_cut_and_its_digits_masked() -> None:
    (row,), _ = read("kpj.csv", f"NIK,KPJ\nNIK: {NIK_A} (benar),{KPJ_A}\n".encode())
    assert row.nik_problem is NikCellProblem.NON_DIGIT
    assert len(row.nik_shown) == 20
    assert NIK_A not in row.nik_shown and NIK_A[4:12] not in row.nik_shown


@pytest.mark.parametrize("cell", ["3201 0147 0890 0001", "3201.0147.0890.0001", f"'{NIK_A}"])
def test_separators_and_a_leading_apostrophe_are_accepted(cell: str) -> None:
    (row,), _ = read("kpj.csv", f"NIK;KPJ\n{cell};21 012 345 678\n".encode())
    assert row.nik == NIK_A
    assert row.kpj_raw == "21 012 345 678"  # KPJ parsing is the preview's job


def test_empty_rows_are_counted_not_returned_and_row_numbers_kept() -> None:
    content = f"NIK;KPJ\n\n{NIK_A};{KPJ_A}\n;\n  ;  \n{NIK_B};{KPJ_B}\n\n".encode()
    rows, empty = read("kpj.csv", content)
    assert [(r.row_number, r.nik) for r in rows] == [(3, NIK_A), (6, NIK_B)]
    assert empty == 4


def test_empty_rows_in_an_xlsx() -> None:
    content = xlsx([["NIK", "KPJ"], [NIK_A, KPJ_A], [None, None], [], [NIK_B, KPJ_B]])
    rows, empty = read("kpj.xlsx", content)
    assert [(r.row_number, r.nik) for r in rows] == [(2, NIK_A), (5, NIK_B)]
    assert empty == 2


def test_a_row_with_other_cells_but_no_nik_is_returned() -> None:
    (row,), empty = read("kpj.csv", f"NIK;KPJ;Nama\n;{KPJ_A};Siti\n".encode())
    assert (row.nik_problem, row.kpj_raw) == (NikCellProblem.EMPTY, KPJ_A)
    assert empty == 0


def test_repeated_niks_are_all_returned_for_the_preview_to_judge() -> None:
    content = f"NIK,KPJ\n{NIK_A},{KPJ_A}\n{NIK_A},{KPJ_A}\n{NIK_A},{KPJ_B}\n".encode()
    rows, _ = read("kpj.csv", content)
    assert [(r.row_number, r.nik, r.kpj_raw) for r in rows] == [
        (2, NIK_A, KPJ_A),
        (3, NIK_A, KPJ_A),
        (4, NIK_A, KPJ_B),
    ]


def test_short_rows_read_missing_cells_as_empty() -> None:
    (row,), _ = read("kpj.csv", f"KPJ,Nama,NIK\n{KPJ_A},Siti\n".encode())
    assert (row.nik_problem, row.kpj_raw) == (NikCellProblem.EMPTY, KPJ_A)


# --- the KPJ file: refused as a whole -----------------------------------------------------


def _docx() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "<w:document/>")
    return out.getvalue()


def _zip_without_workbook() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("kpj.csv", f"NIK,KPJ\n{NIK_A},{KPJ_A}\n")
    return out.getvalue()


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("surat.pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"),
        ("foto.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(200)),
        ("scan.png", b"\x89PNG\r\n\x1a\n" + bytes(100)),
        ("lama.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(500)),
        ("kpj.docx", _docx()),
        ("kpj.zip", _zip_without_workbook()),
        ("data.bin", random.Random(3).randbytes(4096)),
        ("data.bin", bytes(range(1, 32)) * 10),
        ("surat.pdf", b"NIK,KPJ\n"),  # text, but sent as a PDF
    ],
)
def test_files_that_are_not_spreadsheets(name: str, content: bytes) -> None:
    assert refused(name, content).problem is FileProblem.NOT_SPREADSHEET


def test_a_damaged_xlsx_is_unreadable() -> None:
    good = xlsx([["NIK", "KPJ"], [NIK_A, KPJ_A]])
    assert refused("kpj.xlsx", good[: len(good) // 2]).problem is FileProblem.UNREADABLE


def test_an_xlsx_with_broken_sheet_xml_is_unreadable() -> None:
    good = xlsx([["NIK", "KPJ"], [NIK_A, KPJ_A]])
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "xl/worksheets/sheet1.xml":
                data = data[: len(data) // 2]
            target.writestr(info, data)
    assert refused("kpj.xlsx", out.getvalue()).problem is FileProblem.UNREADABLE


@pytest.mark.parametrize("content", [b"", b"  \r\n\r\n", "\ufeff".encode()])
def test_an_empty_file(content: bytes) -> None:
    assert refused("kpj.csv", content).problem is FileProblem.EMPTY


def test_a_header_without_rows_is_empty() -> None:
    assert refused("kpj.csv", b"NIK;KPJ\n;\n\n").problem is FileProblem.EMPTY
    assert refused("kpj.xlsx", xlsx([["NIK", "KPJ"]])).problem is FileProblem.EMPTY
    assert refused("kpj.xlsx", xlsx([[]])).problem is FileProblem.EMPTY


def test_no_nik_column_names_the_headers_found() -> None:
    error = refused("kpj.csv", f"Nama;Nomor KPJ;Tgl Lahir\nSiti;{KPJ_A};1990-08-07\n".encode())
    assert error.problem is FileProblem.NO_NIK_COLUMN
    assert error.detail == "Nama, Nomor KPJ, Tgl Lahir"


def test_a_nik_header_below_the_first_twenty_rows_is_not_found() -> None:
    title = [[f"catatan {n}"] for n in range(20)]
    error = refused("kpj.xlsx", xlsx([*title, ["NIK", "KPJ"], [NIK_A, KPJ_A]]))
    assert error.problem is FileProblem.NO_NIK_COLUMN
    assert error.detail == "catatan 0"


def test_a_nik_column_without_a_kpj_column() -> None:
    error = refused("kpj.csv", f"NIK,Nama\n{NIK_A},Siti\n".encode())
    assert error.problem is FileProblem.NO_KPJ_COLUMN
    assert error.detail == "NIK, Nama"


def test_too_many_rows() -> None:
    lines = "".join(f"{NIK_A},{KPJ_A}\n" for _ in range(4))
    content = f"NIK,KPJ\n{lines}".encode()
    assert len(read("kpj.csv", content, budget=FileBudget(max_rows=4))[0]) == 4
    assert (
        refused("kpj.csv", content, budget=FileBudget(max_rows=3)).problem
        is FileProblem.TOO_MANY_ROWS
    )


def test_an_xlsx_whose_table_starts_away_from_a1_keeps_spreadsheet_row_numbers() -> None:
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet["C4"], sheet["D4"] = "NIK", "KPJ"
    sheet["C5"], sheet["D5"] = NIK_A, KPJ_A
    sheet["C8"], sheet["D8"] = NIK_B, KPJ_B
    out = io.BytesIO()
    workbook.save(out)
    rows, empty = read("kpj.xlsx", out.getvalue())
    assert [(r.row_number, r.nik, r.kpj_raw) for r in rows] == [
        (5, NIK_A, KPJ_A),
        (8, NIK_B, KPJ_B),
    ]
    assert empty == 2


def test_an_xlsx_with_too_many_rows_is_refused_before_it_is_read() -> None:
    content = xlsx([["NIK", "KPJ"], *([NIK_A, KPJ_A] for _ in range(30))])
    assert len(read("kpj.xlsx", content, budget=FileBudget(max_rows=30))[0]) == 30
    assert (
        refused("kpj.xlsx", content, budget=FileBudget(max_rows=5)).problem
        is FileProblem.TOO_MANY_ROWS
    )


def test_progress_is_reported_for_every_row_read() -> None:
    lines = "".join(f"{NIK_A},{KPJ_A}\n" for _ in range(2500))
    steps: list[int] = []
    rows, _ = read_kpj_file("kpj.csv", f"NIK,KPJ\n{lines}".encode(), progress=steps.append)
    assert len(rows) == 2500
    assert steps == [1000, 1000, 500]


def test_a_field_over_the_csv_size_limit_is_unreadable() -> None:
    content = f'NIK,KPJ\n{NIK_A},"{"9" * 200_000}"\n'.encode()
    assert refused("kpj.csv", content).problem is FileProblem.UNREADABLE


def test_a_nul_byte_late_in_the_file_is_binary() -> None:
    content = f"NIK,KPJ\n{NIK_A},{KPJ_A}\n".encode() * 5000 + b"\x00\n"
    assert refused("kpj.csv", content).problem is FileProblem.NOT_SPREADSHEET


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=400),
        st.binary(max_size=400).map(lambda tail: b"PK\x03\x04" + tail),
        st.text(alphabet="NIKKPJnikpj0123456789 ,;\t\r\n\"'.-Ee+", max_size=300).map(str.encode),
    )
)
def test_any_content_is_read_or_refused_with_a_file_problem(content: bytes) -> None:
    try:
        rows, empty = read_kpj_file("kpj.csv", content)
    except KpjFileError as error:
        assert isinstance(error.problem, FileProblem)
        return
    assert rows and empty >= 0
    for row in rows:
        assert (row.nik is None) != (row.nik_problem is None)
        assert len(row.nik_shown) <= 20


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.text(alphabet="0123456789", min_size=16, max_size=16),
            st.text(alphabet="0123456789", min_size=11, max_size=11),
        ),
        min_size=1,
        max_size=30,
    ),
    st.sampled_from(["csv", "xlsx"]),
)
def test_text_niks_and_kpjs_round_trip(pairs: list[tuple[str, str]], kind: str) -> None:
    table = [["NIK", "KPJ"], *[[nik, kpj] for nik, kpj in pairs]]
    if kind == "xlsx":
        content = xlsx(table)
    else:
        content = "".join(f"{nik};{kpj}\n" for nik, kpj in table).encode()
    rows, empty = read(f"kpj.{kind}", content)
    assert empty == 0
    assert [(r.row_number, r.nik, r.kpj_raw) for r in rows] == [
        (index, nik, kpj) for index, (nik, kpj) in enumerate(pairs, 2)
    ]


def test_every_plan_and_occupation_has_its_word_in_the_file() -> None:
    from domain.vocabulary import Occupation, PaymentPlan
    from storage.collective_file import OCCUPATION_WORDS, PLAN_WORDS

    assert set(PLAN_WORDS) == set(PaymentPlan)
    assert set(OCCUPATION_WORDS) == set(Occupation)


# --- budgets: refused before any parser runs (issue 11) ------------------------------------


@pytest.mark.parametrize(
    "dimension",
    ["A1:XFD999990", "A1:B2", None],
    ids=["declared", "dimension-lies", "no-dimension"],
)
def test_a_cell_at_xfd999990_is_refused_before_calamine_allocates(dimension: str | None) -> None:
    # calamine allocated the whole A1:XFD999990 rectangle (524 GB) and aborted the process.
    content = far_cell_xlsx(dimension=dimension)
    assert len(content) < 2000
    error = refused("kpj.xlsx", content)
    assert error.problem is FileProblem.TOO_LARGE
    assert "column 16384" in error.detail


def test_a_sheet_reaching_past_the_row_budget_is_refused_unread() -> None:
    error = refused("kpj.xlsx", far_cell_xlsx("B1048576", dimension=None))
    assert error.problem is FileProblem.TOO_MANY_ROWS
    assert "row 1048576" in error.detail
    # A declared dimension alone is enough.
    error = refused("kpj.xlsx", far_cell_xlsx("B3", dimension="A1:B2000000"))
    assert error.problem is FileProblem.TOO_MANY_ROWS


def test_rows_times_columns_over_the_cell_budget_is_refused() -> None:
    # Column Z, row 999,999: 26 million cells, over a GB in calamine.
    error = refused("kpj.xlsx", far_cell_xlsx("Z999999", dimension=None))
    assert error.problem is FileProblem.TOO_LARGE
    assert "cells" in error.detail
    # Within the budget for rows and columns one at a time, not together.
    small = FileBudget(max_cells=100_000)
    error = refused("kpj.xlsx", far_cell_xlsx("AD5000", dimension=None), budget=small)
    assert (error.problem, error.detail) == (
        FileProblem.TOO_LARGE,
        "a sheet spans 2999970 cells, over 100000",
    )


def test_a_far_cell_in_a_sheet_stored_elsewhere_is_found() -> None:
    sheet = sheet_xml('<row r="9"><c r="XFD9"><v>1</v></c></row>', dimension="A1:B9")
    content = workbook(sheet, sheet_part="xl/theme/sheet.xml")
    assert refused("kpj.xlsx", content).problem is FileProblem.TOO_LARGE


def test_a_zip_bomb_is_refused_by_its_compression_ratio() -> None:
    content = zip_bomb_xlsx(200)  # 200 MiB of zeros in ~200 KB
    assert len(content) < 300_000
    error = refused("kpj.xlsx", content)
    assert error.problem is FileProblem.TOO_LARGE
    assert "compressed" in error.detail


def test_unpacked_size_and_member_count_budgets() -> None:
    good = xlsx([["NIK", "KPJ"], [NIK_A, KPJ_A]])
    with zipfile.ZipFile(io.BytesIO(good)) as archive:
        members = archive.infolist()
    unpacked = sum(info.file_size for info in members)
    assert read("kpj.xlsx", good, budget=FileBudget(max_unpacked_bytes=unpacked))[0]
    error = refused("kpj.xlsx", good, budget=FileBudget(max_unpacked_bytes=unpacked - 1))
    assert error.problem is FileProblem.TOO_LARGE and "unpacks" in error.detail
    error = refused("kpj.xlsx", good, budget=FileBudget(max_members=len(members) - 1))
    assert error.problem is FileProblem.TOO_LARGE and "parts" in error.detail


def test_an_oversized_csv_is_refused_by_its_bytes_before_decoding() -> None:
    content = f"NIK,KPJ\n{NIK_A},{KPJ_A}\n".encode() * 100
    assert read("kpj.csv", content, budget=FileBudget(max_file_bytes=len(content)))[0]
    error = refused("kpj.csv", content, budget=FileBudget(max_file_bytes=len(content) - 1))
    assert error.problem is FileProblem.TOO_LARGE


def test_a_csv_of_empty_lines_stops_at_the_row_budget() -> None:
    budget = FileBudget(max_rows=10)  # at most 2 x 10 + 20 records
    content = f"NIK,KPJ\n{NIK_A},{KPJ_A}\n".encode() + b",\n" * 38
    assert read("kpj.csv", content, budget=budget)[1] == 38
    error = refused("kpj.csv", content + b",\n", budget=budget)
    assert (error.problem, error.detail) == (FileProblem.TOO_MANY_ROWS, "more than 40 rows")


def test_a_wide_sheet_within_the_budget_is_read() -> None:
    # 30 columns (up to AD) and a theme whose attributes look like references.
    header = ["NIK", *[f"kolom {n}" for n in range(28)], "KPJ"]
    content = xlsx([header, [NIK_A, *[""] * 28, KPJ_A]])
    rows, _ = read("kpj.xlsx", content)
    assert [(r.nik, r.kpj_raw) for r in rows] == [(NIK_A, KPJ_A)]


# --- the new columns, and the CSV form ---------------------------------------------------

#: Text a spreadsheet would run as a formula (OWASP CSV injection), and the escape itself.
FORMULA_LOOKING = ["=1+1", "+62 ojek", "-RT 02", "@SUM(A1)", "\tx", "\rx", "'quoted", "''x"]


def test_a_legacy_row_leaves_what_was_never_asked_empty() -> None:
    """Rows from before migration 0009: no place of birth, street, regency or occupation."""
    row = collective_row(1, birth_place=None, street_address=None, regency=None, occupation=None)
    sheet = load_workbook(io.BytesIO(export([row]))).active
    assert sheet is not None
    for header in (
        "Tempat Lahir",
        "Alamat (Jalan, RT/RW)",
        "Kabupaten/Kota",
        "Lokasi Kerja (Kabupaten/Kota)",
        "Jenis Pekerjaan",
    ):
        assert sheet.cell(HEADER_ROW + 1, col(header)).value is None
    assert sheet.cell(HEADER_ROW + 1, col("Program")).value == "JKK+JKM"


def test_other_occupation_is_written_as_typed_never_as_lainnya() -> None:
    rows = [
        collective_row(1, occupation=Occupation.OTHER, occupation_text="Buruh cuci"),
        collective_row(2, occupation=Occupation.OTHER, occupation_text=None),
    ]
    sheet = load_workbook(io.BytesIO(export(rows))).active
    assert sheet is not None
    cells = [sheet.cell(HEADER_ROW + n, col("Jenis Pekerjaan")).value for n in (1, 2)]
    assert cells == ["Buruh cuci", None]


@pytest.mark.parametrize("typed", FORMULA_LOOKING)
def test_formula_looking_typed_text_stays_a_text_cell_in_the_xlsx(typed: str) -> None:
    row = collective_row(
        1, occupation=Occupation.OTHER, occupation_text=typed, street_address=typed
    )
    sheet = load_workbook(io.BytesIO(export([row]))).active
    assert sheet is not None
    for header in ("Jenis Pekerjaan", "Alamat (Jalan, RT/RW)"):
        cell = sheet.cell(HEADER_ROW + 1, col(header))
        assert (cell.data_type, cell.value) == ("s", typed)


def test_the_csv_escapes_formulas_and_reads_back_exactly() -> None:
    rows = [
        collective_row(
            index,
            full_name=typed,
            birth_place=typed,
            street_address=typed,
            village=typed,
            district=typed,
            regency=typed,
            occupation=Occupation.OTHER,
            occupation_text=typed,
            sponsor_name=typed,
            phone_e164="+15551234567",
        )
        for index, typed in enumerate(FORMULA_LOOKING, 1)
    ]
    target = io.BytesIO()
    assert write_collective_csv(rows, target) == len(rows)
    content = target.getvalue()
    assert content.startswith(b"\xef\xbb\xbf")  # UTF-8 with BOM: spreadsheets read accents
    # No cell of the file as a spreadsheet reads it starts a formula.
    for cells in csv.reader(io.StringIO(content.decode("utf-8-sig"), newline="")):
        assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in cells)
    header, data = read_collective_csv(content)
    assert header == COLLECTIVE_HEADERS
    by_header = [dict(zip(header, cells, strict=True)) for cells in data]
    for typed, row in zip(FORMULA_LOOKING, by_header, strict=True):
        for name in (
            "Nama Lengkap (sesuai KTP)",
            "Tempat Lahir",
            "Alamat (Jalan, RT/RW)",
            "Desa/Kelurahan",
            "Kecamatan",
            "Kabupaten/Kota",
            "Jenis Pekerjaan",
            "Nama ASN Penanggung",
        ):
            assert row[name] == typed
        assert row["No. HP"] == "+15551234567"
        assert row["Tanggal Lahir"] == "07/08/1990"
        assert row["Bulan Pertama Kepesertaan"] == "12/2026"
        assert row["Penghasilan Dilaporkan (Rp)"] == "1000000"
    assert by_header[0]["NIK"] == "3201000000000001"


def test_the_csv_with_a_kpj_column_added_is_a_kpj_file() -> None:
    """BPJS may send the CSV back with the KPJ filled in: the importer reads it."""
    target = io.BytesIO()
    write_collective_csv([collective_row(1, full_name="=cmd")], target)
    header, data = read_collective_csv(target.getvalue())
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*header, "No. KPJ"])
    writer.writerow([*data[0], KPJ_A])
    rows, _ = read("kembali.csv", out.getvalue().encode())
    assert [(row.nik, row.kpj_raw) for row in rows] == [("3201000000000001", KPJ_A)]


def test_an_erased_workers_row_has_no_personal_cell_in_the_new_columns() -> None:
    row = erased_row(
        occupation=Occupation.DRIVER,
        sponsor_nip="198503122010011002",
        sponsor_name="Budi Santoso",
        plan=PaymentPlan.MONTHLY,
        first_month=date(2026, 12, 1),
        relationship=Relationship.EMPLOYEE,
    )
    sheet = load_workbook(io.BytesIO(export([row]))).active
    assert sheet is not None
    values = {
        header: sheet.cell(HEADER_ROW + 1, col(header)).value for header in COLLECTIVE_HEADERS
    }
    for header in (
        "NIK",
        "Tempat Lahir",
        "Tanggal Lahir",
        "No. HP",
        "Alamat (Jalan, RT/RW)",
        "Kabupaten/Kota",
        "Lokasi Kerja (Kabupaten/Kota)",
    ):
        assert values[header] is None
    assert values["Jenis Pekerjaan"] == "Sopir"
    assert values["Hubungan dengan ASN"] == "Bekerja untuk rumah tangga ASN"
