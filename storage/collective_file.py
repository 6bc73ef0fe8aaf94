"""The files a PIC exchanges with the BPJS Ketenagakerjaan branch (PRODUCT 4.5).

Out: the collective registration file (XLSX), one row per enrollment of a
submission batch, streamed by `storage.xlsx_stream` so memory stays flat
however many rows there are. In: the file BPJS sends back mapping NIK to KPJ (CSV or XLSX),
read into `KpjRow`s for the import preview (`storage.collective`).

No database here; bytes in, bytes out.

Language of the collective file: the words for sex, occupation, relationship
and payment plan are fixed Indonesian constants below, not catalogue entries;
the headers and their order come from the column map
(`storage.collective_columns`), which a province edits to match its branch.
The file is read by the BPJS branch, whatever language the PIC chats in, and
its layout must not change with a user preference.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import itertools
import os
import posixpath
import re
import zipfile
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime
from enum import StrEnum
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO

from domain._digits import is_ascii_digits, strip_separators
from domain.nik import NIK_LENGTH, mask_nik
from domain.tariff import LOWEST_INCOME_BRACKET
from domain.vocabulary import Occupation, PaymentPlan, Relationship, Sex
from storage.collective_columns import DEFAULT_COLUMN_MAP, ColumnMap, ColumnSource
from storage.xlsx_stream import Cell, SheetWriter, Style

if TYPE_CHECKING:
    # Imported where an XLSX is read: the running bot, which only writes them, goes without (1 MB).
    from python_calamine import CalamineWorkbook

# --- the collective file (out) ----------------------------------------------------------

SHEET_TITLE = "Peserta"
FILE_TITLE = "Pendaftaran Kolektif Peserta BPJS Ketenagakerjaan Bukan Penerima Upah (BPU)"
#: Labels of the title block, one per row above the header row.
BATCH_LABEL = "Nomor Batch"
OPD_LABEL = "OPD"
DATE_LABEL = "Tanggal"
#: The headers of the shipped column map (`storage.collective_columns`).
COLLECTIVE_HEADERS: tuple[str, ...] = DEFAULT_COLUMN_MAP.headers
#: Row of the column headers (1-based); the data starts right below.
HEADER_ROW = 6

SEX_WORDS: Mapping[Sex, str] = {Sex.MALE: "L", Sex.FEMALE: "P"}
OCCUPATION_WORDS: Mapping[Occupation, str] = {
    Occupation.FAMILY_MEMBER: "",  # a relationship, never an occupation: left blank
    Occupation.HOUSEHOLD_ASSISTANT: "Asisten rumah tangga",
    Occupation.GARDEN_WORKER: "Tukang kebun",
    Occupation.DRIVER: "Sopir",
    Occupation.HOUSE_GUARD: "Penjaga rumah",
    Occupation.PLACE_OF_WORSHIP_WORKER: "Marbot / pengurus rumah ibadah",
    Occupation.FISHER: "Nelayan",
    Occupation.OJOL_RIDER: "Pengemudi ojek online",
    Occupation.OTHER: "",  # the typed occupation is written instead
}
RELATIONSHIP_WORDS: Mapping[Relationship, str] = {
    Relationship.EMPLOYEE: "Bekerja untuk rumah tangga ASN",
    Relationship.FAMILY: "Anggota keluarga ASN",
    Relationship.NEIGHBOUR: "Tetangga / warga sekitar",
    Relationship.OTHER: "Lainnya",
}
PLAN_WORDS: Mapping[PaymentPlan, str] = {
    PaymentPlan.MONTHLY: "Bulanan",
    PaymentPlan.QUARTERLY: "Tiga bulanan",
    PaymentPlan.SEMIANNUAL: "Enam bulanan",
    PaymentPlan.ANNUAL: "Tahunan",
    PaymentPlan.PAYROLL_DEDUCTION: "Potong gaji (bendahara)",
}
#: The name cell of an enrollment whose worker had their data erased (the other
#: personal cells are empty); the file says so in `ERASED_NOTE`, above the headers.
ERASED_ROW_NAME = "DIHAPUS (permintaan pemilik data)"
ERASED_NOTE = (
    "Catatan: {count} baris berisi pekerja yang datanya dihapus atas permintaan pemilik "
    "data (UU No. 27 Tahun 2022 tentang Pelindungan Data Pribadi); NIK, nama, tempat dan "
    "tanggal lahir, jenis kelamin, nomor HP dan alamatnya tidak dicantumkan."
)
DATE_FORMAT = "DD/MM/YYYY"
MONTH_FORMAT = "MM/YYYY"
TEXT_FORMAT = "@"
INCOME_FORMAT = "#,##0"
#: The CSV's date and month text (the XLSX formats above, as Python writes them).
CSV_DATE = "%d/%m/%Y"
CSV_MONTH = "%m/%Y"


@dataclasses.dataclass(frozen=True, slots=True)
class CollectiveRow:
    """One enrollment as it goes to BPJS; the NIK in full (the only place it leaves encrypted).

    `erased`: the worker had their data erased after the batch went out; the
    row keeps its place (and the enrollment's own cells) and shows
    `ERASED_ROW_NAME`, with the personal cells empty (`erased_row`).
    `birth_place`, `street_address` and `regency` are None for workers
    enrolled before they were asked (the cells stay empty); so is
    `occupation` for a family member enrolled then.
    """

    nik: str
    full_name: str
    birth_date: date | None
    sex: Sex | None
    phone_e164: str | None
    village: str
    district: str
    occupation: Occupation | None
    sponsor_nip: str
    sponsor_name: str
    plan: PaymentPlan
    first_month: date
    erased: bool = False
    birth_place: str | None = None
    street_address: str | None = None
    regency: str | None = None
    relationship: Relationship = Relationship.OTHER
    #: The occupation typed after "other".
    occupation_text: str | None = None


def erased_row(
    *,
    occupation: Occupation | None,
    sponsor_nip: str,
    sponsor_name: str,
    plan: PaymentPlan,
    first_month: date,
    relationship: Relationship = Relationship.OTHER,
) -> CollectiveRow:
    """The row of an erased worker's enrollment: no NIK, name, birth date, sex, phone or address."""
    return CollectiveRow(
        nik="",
        full_name=ERASED_ROW_NAME,
        birth_date=None,
        sex=None,
        phone_e164=None,
        village="",
        district="",
        occupation=occupation,
        sponsor_nip=sponsor_nip,
        sponsor_name=sponsor_name,
        plan=plan,
        first_month=first_month,
        erased=True,
        relationship=relationship,
    )


def _national_phone(phone_e164: str | None) -> str | None:
    """+6281234567890 -> 081234567890, the form written on Indonesian forms; others as stored."""
    if phone_e164 is None:
        return None
    if phone_e164.startswith("+62"):
        return "0" + phone_e164[3:]
    return phone_e164


def occupation_word(row: CollectiveRow) -> str | None:
    """The occupation cell: the listed word, the typed text after "other", else empty."""
    if row.occupation is None:
        return None
    if row.occupation is Occupation.OTHER:
        return row.occupation_text or None
    return OCCUPATION_WORDS[row.occupation] or None


_TEXT = Style(TEXT_FORMAT)
_BOLD = Style(bold=True)
_DATE = Style(DATE_FORMAT)
_MONTH = Style(MONTH_FORMAT)
_INCOME = Style(INCOME_FORMAT)

#: A cell of a data row: plain value, or value and style.
_Value = str | int | date | None
_CellOf = Callable[[CollectiveRow, int], "_Value | Cell"]

#: Empty in an erased worker's row (the enrollment's own cells stay).
PERSONAL_SOURCES = frozenset(
    {
        ColumnSource.NIK,
        ColumnSource.BIRTH_PLACE,
        ColumnSource.BIRTH_DATE,
        ColumnSource.SEX,
        ColumnSource.PHONE,
        ColumnSource.STREET_ADDRESS,
        ColumnSource.VILLAGE,
        ColumnSource.DISTRICT,
        ColumnSource.REGENCY,
        ColumnSource.WORK_LOCATION,
    }
)


def _xlsx_cell(source: ColumnSource) -> _CellOf:
    """How one field becomes an XLSX cell (NIK, phone and NIP as "@" text; dates as dates)."""
    cells: dict[ColumnSource, _CellOf] = {
        ColumnSource.ROW_NUMBER: lambda row, number: number,
        ColumnSource.NIK: lambda row, number: Cell(row.nik, _TEXT),
        ColumnSource.FULL_NAME: lambda row, number: row.full_name,
        ColumnSource.BIRTH_PLACE: lambda row, number: row.birth_place,
        ColumnSource.BIRTH_DATE: lambda row, number: Cell(row.birth_date, _DATE),
        ColumnSource.SEX: lambda row, number: SEX_WORDS[row.sex] if row.sex else None,
        ColumnSource.PHONE: lambda row, number: Cell(_national_phone(row.phone_e164), _TEXT),
        ColumnSource.STREET_ADDRESS: lambda row, number: row.street_address,
        ColumnSource.VILLAGE: lambda row, number: row.village,
        ColumnSource.DISTRICT: lambda row, number: row.district,
        ColumnSource.REGENCY: lambda row, number: row.regency,
        ColumnSource.WORK_LOCATION: lambda row, number: row.regency,
        ColumnSource.OCCUPATION: lambda row, number: occupation_word(row),
        ColumnSource.RELATIONSHIP: lambda row, number: RELATIONSHIP_WORDS[row.relationship],
        ColumnSource.DECLARED_INCOME: lambda row, number: Cell(LOWEST_INCOME_BRACKET, _INCOME),
        ColumnSource.SPONSOR_NIP: lambda row, number: Cell(row.sponsor_nip, _TEXT),
        ColumnSource.SPONSOR_NAME: lambda row, number: row.sponsor_name,
        ColumnSource.PLAN: lambda row, number: PLAN_WORDS[row.plan],
        ColumnSource.FIRST_MONTH: lambda row, number: Cell(row.first_month.replace(day=1), _MONTH),
    }
    return cells[source]


def _row_builder(
    columns: ColumnMap, cell_of: Callable[[ColumnSource], _CellOf]
) -> Callable[[CollectiveRow, int], list[Any]]:
    """The function that turns one row (and its number) into the cells of `columns`."""
    full: list[_CellOf] = []
    erased: list[_CellOf] = []
    for column in columns.columns:
        if column.source is None:
            fixed = column.value

            def constant(row: CollectiveRow, number: int, fixed: str | None = fixed) -> _Value:
                return fixed

            full.append(constant)
            erased.append(constant)
            continue
        getter = cell_of(column.source)
        full.append(getter)
        if column.source in PERSONAL_SOURCES:
            erased.append(lambda row, number: None)
        else:
            erased.append(getter)

    def build(row: CollectiveRow, number: int) -> list[Any]:
        return [cell(row, number) for cell in (erased if row.erased else full)]

    return build


class CollectiveWriter:
    """The collective file of one batch, written a chunk of rows at a time.

    For a caller that gets the rows in pieces (`storage.collective.export_batch`
    reads them chunk by chunk); `write_collective_xlsx` is the same for one
    iterable. The title block and the header row are written on creation;
    use as a context manager: the file is complete when the block ends
    without an exception (see `write_collective_xlsx` for what it holds).
    """

    def __init__(
        self,
        target: BinaryIO,
        *,
        batch_number: str,
        opd_name: str,
        created_at: datetime,
        erased_rows: int = 0,
        columns: ColumnMap = DEFAULT_COLUMN_MAP,
    ) -> None:
        if created_at.tzinfo is None:
            raise ValueError("created_at must be an aware datetime")
        self.rows_written = 0
        self._build = _row_builder(columns, _xlsx_cell)
        self._sheet = SheetWriter(
            target,
            sheet_name=SHEET_TITLE,
            column_widths=columns.widths,
            freeze_rows=HEADER_ROW,
            title=f"{FILE_TITLE} {batch_number}",
            creator="SERTAKAN",
            created_at=created_at,
        )
        try:
            append = self._sheet.append
            append([Cell(FILE_TITLE, _BOLD)])
            append([Cell(BATCH_LABEL, _BOLD), batch_number])
            append([OPD_LABEL, opd_name])
            append([DATE_LABEL, Cell(created_at.date(), _DATE)])
            # The spare row above the headers: a batch without erasures keeps its bytes.
            append([Cell(ERASED_NOTE.format(count=erased_rows), _BOLD)] if erased_rows else [])
            append([Cell(header, _BOLD) for header in columns.headers])
        except BaseException:
            self._sheet.abort()
            raise

    def write(self, rows: Iterable[CollectiveRow]) -> int:
        """Append `rows` in order, numbered on from the rows before; returns how many."""
        append, build = self._sheet.append, self._build
        number = self.rows_written
        for row in rows:
            number += 1
            append(build(row, number))
        written = number - self.rows_written
        self.rows_written = number
        return written

    def close(self) -> None:
        self._sheet.close()

    def abort(self) -> None:
        self._sheet.abort()

    def __enter__(self) -> CollectiveWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def write_collective_xlsx(
    rows: Iterable[CollectiveRow],
    target: BinaryIO,
    *,
    batch_number: str,
    opd_name: str,
    created_at: datetime,
    erased_rows: int = 0,
    columns: ColumnMap = DEFAULT_COLUMN_MAP,
) -> int:
    """Write the collective file of one batch to `target`; return the number of data rows.

    One sheet: a title block (title, batch number, OPD, date), the header row
    (`HEADER_ROW`, frozen in view) and one row per enrollment in the order
    given. NIK, phone and NIP are text cells with the "@" text format (Excel
    would round a 16-digit number, drop a phone's leading zero, and a retyped
    NIK stays text); dates are date cells. All text is written as inline
    strings (`storage.xlsx_stream`): a name typed as "=HYPERLINK(...)" or
    "<r>...</r>" reads back as typed, never as a formula or markup; control
    characters, which XLSX cannot hold, are removed. Rows are streamed into
    the zip as they come: memory does not grow with the row count, and no
    temporary file is used.

    Deterministic: the same rows, `batch_number`, `opd_name` and `created_at`
    give the same bytes (document properties and zip entry times are set from
    `created_at`, which must be aware; the sheet shows its date as given, so
    pass it in the zone the PIC should see).

    `erased_rows`: how many of the rows are erased workers' (`erased_row`);
    when any, the row above the headers says so (`ERASED_NOTE`), otherwise it
    stays empty and a re-export gives the same bytes as the first.

    `columns`: which header holds which field, left to right (the province's
    map, `storage.collective_columns`; the shipped one by default).
    """
    with CollectiveWriter(
        target,
        batch_number=batch_number,
        opd_name=opd_name,
        created_at=created_at,
        erased_rows=erased_rows,
        columns=columns,
    ) as writer:
        writer.write(rows)
    return writer.rows_written


# --- the collective file as CSV ----------------------------------------------------------

#: Starts of a cell's text that a spreadsheet takes as a formula when it opens a CSV
#: (OWASP, "CSV Injection"): such text is written after `CSV_ESCAPE`.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
#: The escape: a spreadsheet shows the text after it as text. Text that itself
#: begins with it is escaped too, so `csv_unescape` gives back exactly what was written.
CSV_ESCAPE = "'"


def csv_text(value: str) -> str:
    """`value` as a CSV cell no spreadsheet runs as a formula (`csv_unescape` reverses it)."""
    if value.startswith(FORMULA_STARTS) or value.startswith(CSV_ESCAPE):
        return CSV_ESCAPE + value
    return value


def csv_unescape(cell: str) -> str:
    """A cell written by `csv_text` as it was before; any other cell unchanged."""
    if cell.startswith(CSV_ESCAPE) and cell[1:].startswith((*FORMULA_STARTS, CSV_ESCAPE)):
        return cell[1:]
    return cell


def _csv_cell(value: Any) -> str:
    """One XLSX cell of `_xlsx_cell` as CSV text: dates as the sheet shows them, text escaped."""
    style = None
    if isinstance(value, Cell):
        value, style = value.value, value.style
    if value is None:
        return ""
    if isinstance(value, date):
        return value.strftime(CSV_MONTH if style == _MONTH else CSV_DATE)
    if isinstance(value, int):
        return str(value)
    return csv_text(str(value))


def write_collective_csv(
    rows: Iterable[CollectiveRow],
    target: BinaryIO,
    *,
    columns: ColumnMap = DEFAULT_COLUMN_MAP,
) -> int:
    """Write the collective file as CSV to `target`; return the number of data rows.

    For a branch's system that takes CSV: UTF-8 with a byte-order mark (so a
    spreadsheet reads the accents), comma-separated, quoted where needed, the
    header row of `columns` and one row per enrollment; no title block (the
    batch number belongs in the file name). Dates are DD/MM/YYYY, the first
    month MM/YYYY, the income a plain number. Text that a spreadsheet would
    run as a formula (beginning with = + - @, a tab or a carriage return) is
    written after an apostrophe (`csv_text`); `read_collective_csv` removes
    it again, so nothing typed is lost on the way back. NIKs are plain digits:
    open the CSV through a text import (or use the XLSX) to keep all 16.
    Erased workers' rows are written as in the XLSX.
    """
    build = _row_builder(columns, _xlsx_cell)
    text = io.TextIOWrapper(target, encoding="utf-8-sig", newline="", write_through=True)
    try:
        writer = csv.writer(text, lineterminator="\r\n")
        writer.writerow([csv_text(header) for header in columns.headers])
        number = 0
        for row in rows:
            number += 1
            writer.writerow([_csv_cell(cell) for cell in build(row, number)])
        text.flush()
    finally:
        text.detach()  # the caller owns `target`
    return number


def read_collective_csv(content: bytes) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """The headers and data rows of a CSV written by `write_collective_csv`, cells unescaped."""
    table = csv.reader(io.StringIO(content.decode("utf-8-sig"), newline=""))
    header = tuple(csv_unescape(cell) for cell in next(table, []))
    return header, [tuple(csv_unescape(cell) for cell in row) for row in table]


# --- the KPJ file (in) --------------------------------------------------------------------


class FileProblem(StrEnum):
    """Why a file sent as a KPJ file cannot be read at all."""

    #: Not a CSV or XLSX file (a PDF, a photo, a Word document, an old .xls ...).
    NOT_SPREADSHEET = "not_spreadsheet"
    #: Looks like a spreadsheet but is damaged or too large once unpacked.
    UNREADABLE = "unreadable"
    #: No rows at all, or a header without any row under it.
    EMPTY = "empty"
    NO_NIK_COLUMN = "no_nik_column"
    NO_KPJ_COLUMN = "no_kpj_column"
    TOO_MANY_ROWS = "too_many_rows"
    #: Over a `FileBudget` limit other than rows: bytes, unpacked size, compression
    #: ratio, columns, cells, or the reader's memory limit.
    TOO_LARGE = "too_large"
    #: The isolated reader ran out of its time (`storage.isolated_read`).
    TOO_SLOW = "too_slow"


class KpjFileError(Exception):
    """The whole file is refused; `detail` says what was found (e.g. the headers)."""

    def __init__(self, problem: FileProblem, detail: str = "") -> None:
        super().__init__(f"{problem.value}: {detail}" if detail else problem.value)
        self.problem = problem
        self.detail = detail


class NikCellProblem(StrEnum):
    """Why one NIK cell does not hold a readable 16-digit NIK."""

    EMPTY = "empty"
    #: A spreadsheet stored the NIK as a number: 16 digits do not survive that.
    SCIENTIFIC = "scientific"
    NON_DIGIT = "non_digit"
    LENGTH = "length"


@dataclasses.dataclass(frozen=True, slots=True)
class KpjRow:
    """One data row of a KPJ file."""

    #: The row number as the spreadsheet shows it (CSV: the line's record number).
    row_number: int
    #: 16 digits when readable, else None (see `nik_problem`).
    nik: str | None
    nik_problem: NikCellProblem | None
    #: What to show the PIC: the masked NIK, or the cell's text (at most 20
    #: characters, long digit runs masked).
    nik_shown: str
    #: The KPJ cell as text (parse with `domain.kpj.parse_kpj`).
    kpj_raw: str


#: Header words (normalised: case-folded, parenthesised notes and anything but
#: letters and digits removed) that name the NIK and the KPJ column.
NIK_HEADERS = frozenset(
    {
        "nik",
        "nonik",
        "nomornik",
        "niknumber",
        "nikktp",
        "noktp",
        "nomorktp",
        "nikpeserta",
        "niktk",
        "niktenagakerja",
        "nomorindukkependudukan",
        "noindukkependudukan",
        "noidentitas",
        "nomoridentitas",
    }
)
KPJ_HEADERS = frozenset(
    {
        "kpj",
        "nokpj",
        "nomorkpj",
        "kpjnumber",
        "kpjno",
        "kpjpeserta",
        "nokpjpeserta",
        "nokartu",
        "nomorkartu",
        "nokartupeserta",
        "nomorkartupeserta",
        "nokartukpj",
        "nopeserta",
        "nomorpeserta",
    }
)
#: The header row is looked for in this many rows from the top (title rows above it).
HEADER_SEARCH_ROWS = 20
#: `read_kpj_file` reports progress every this many rows.
PROGRESS_EVERY = 1000
#: Members of a zip smaller than this are not held to `FileBudget.max_ratio`
#: (tiny XML parts compress far better than any sheet).
RATIO_FLOOR_BYTES = 1 << 20
_SCAN_CHUNK = 1 << 20
# A row's or a cell's reference ("5", "XFD999990"); double or single quotes, spaces around "=".
# References far enough to matter (a row's is "5", a cell's "XFD999990"; double or
# single quotes, spaces around "="): a six-digit row, and two or more letters.
_LONG_ROW = re.compile(rb"""r\s*=\s*["'][A-Za-z]*([0-9]{6,})["']""")
_WIDE_COLUMN = re.compile(rb"""r\s*=\s*["']([A-Za-z]{2,})[0-9]+["']""")
_ANY_REFERENCE = re.compile(rb"""r\s*=\s*["'][A-Za-z]*[0-9]""")
# "Target" of a relationship of a worksheet type, in either attribute order.
_SHEET_TARGET = re.compile(
    rb"""<Relationship\b(?=[^>]*Type\s*=\s*["'][^"']*sheet["'])[^>]*Target\s*=\s*["']([^"']*)["']"""
)
# Parts that are not sheets unless the relationships say so: the attributes of a
# theme (dir="5400000") look like references.
_NOT_SHEETS = ("xl/theme/", "docProps/", "xl/styles.xml", "xl/sharedStrings.xml", "[Content_Types]")
#: Below `_LONG_ROW` and `_WIDE_COLUMN`: at most column Z, row 99,999.
_NEAR_COLUMNS = 26
_NEAR_ROWS = 99_999
_DIMENSION = re.compile(rb"""dimension\s+ref\s*=\s*["']([^"']*)["']""")
_RANGE_END = re.compile(r"^\$?([A-Za-z]*)\$?([0-9]*)$")


@dataclasses.dataclass(frozen=True, slots=True)
class FileBudget:
    """How much of an untrusted KPJ file is read before it is refused.

    A real KPJ file for 144,000 workers is about 10 MB as XLSX (about 60 MB
    unpacked, a handful of columns); the defaults allow several times that.
    Checked before any parser runs (file bytes; for an XLSX the zip's
    members, declared sizes and compression ratios, and every sheet's
    declared dimension and largest cell reference) and again while rows are
    read. What a parser may still allocate is bounded by the isolated
    reader's memory limit (`storage.isolated_read.ReadLimits`).
    """

    #: Bytes of the file as sent (CSV text or the XLSX zip).
    max_file_bytes: int = 64 << 20
    #: Non-empty data rows.
    max_rows: int = 500_000
    #: Columns of a sheet (up to the largest cell reference).
    max_columns: int = 512
    #: Rows x columns of a sheet: what the XLSX reader allocates a cell for.
    max_cells: int = 10_000_000
    #: Members of the XLSX zip (a workbook has a dozen or two).
    max_members: int = 1_000
    #: Bytes of the XLSX once unpacked, all members together.
    max_unpacked_bytes: int = 512 << 20
    #: Unpacked / packed size of one member of at least `RATIO_FLOOR_BYTES`
    #: (sheets compress 5-20x; a zip bomb about 1000x).
    max_ratio: int = 200

    @property
    def max_sheet_rows(self) -> int:
        """Rows of a sheet or records of a CSV, empty ones included (some empty rows are fine)."""
        return 2 * self.max_rows + HEADER_SEARCH_ROWS


DEFAULT_BUDGET = FileBudget()
_SHOWN_LENGTH = 20
_PARENTHESISED = re.compile(r"\([^)]*\)|\[[^\]]*\]")
_NOT_ALNUM = re.compile(r"[\W_]+")
_SCIENTIFIC = re.compile(r"^[+-]?\d+(?:[.,]\d+)?[eE][+-]?\d+$")
_DIGIT = re.compile(r"\d")
_CSV_DELIMITERS = (",", ";", "\t")
# Text with more than one control character (other than tab and line ends) in
# 200 is binary: a CSV has none.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_BINARY_SAMPLE = 65536
_BINARY_CONTROL_RATIO = 200
_ZIP_MAGIC = b"PK\x03\x04"
_OTHER_FORMATS: tuple[tuple[bytes, str], ...] = (
    (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
        "an old Office file (.xls/.doc) or a password-protected workbook: save as .xlsx or CSV",
    ),
    (b"%PDF", "a PDF document"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89PNG", "a PNG image"),
    (b"GIF8", "a GIF image"),
    (b"RIFF", "a RIFF file (image or audio)"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"Rar!", "a RAR archive"),
    (b"7z\xbc\xaf", "a 7-Zip archive"),
)
_OTHER_EXTENSIONS = frozenset(
    {".pdf", ".doc", ".docx", ".jpg", ".jpeg", ".png", ".gif", ".webp", ".heic", ".xls", ".ods"}
)


def normalise_header(text: str) -> str:
    """ "No. KPJ (11 digit)" -> "nokpj": notes in brackets, case, spaces and punctuation dropped."""
    return _NOT_ALNUM.sub("", _PARENTHESISED.sub("", text).casefold())


def read_kpj_file(
    file_name: str,
    content: bytes,
    *,
    budget: FileBudget = DEFAULT_BUDGET,
    progress: Callable[[int], object] | None = None,
) -> tuple[list[KpjRow], int]:
    """Read a NIK -> KPJ file sent back by BPJS: (data rows, number of completely empty rows).

    The format is decided by the content (an XLSX is a zip with a workbook in
    it; anything else must decode as text and is read as CSV with `,`, `;` or
    tab as delimiter, UTF-8 with or without BOM, UTF-16 with BOM, else
    cp1252/latin-1); the name only tells a picture or a document apart. The
    header row is the first of the top `HEADER_SEARCH_ROWS` rows with a NIK
    column; the first XLSX sheet that has one is used. Cells are never
    guessed: a NIK stored as a number is reported as SCIENTIFIC (Excel keeps 15
    significant digits, so the 16th is already lost).

    `progress`, if given, is called with the number of data rows read, every
    `PROGRESS_EVERY` rows and at the end. Raises KpjFileError for a file that
    cannot be used at all, or that is over `budget` (checked before parsing
    where the file declares its size, else while reading).

    This runs the parsers in the calling process: for a file from outside use
    `storage.isolated_read.read_kpj_file_isolated`, which runs this in a child
    process with memory and time limits.
    """
    check_file_size(len(content), budget)
    if not content.strip():
        raise KpjFileError(FileProblem.EMPTY, "the file has no content")
    for magic, what in _OTHER_FORMATS:
        if content.startswith(magic):
            raise KpjFileError(FileProblem.NOT_SPREADSHEET, what)
    if content.startswith(_ZIP_MAGIC):
        from python_calamine import CalamineError

        with contextlib.closing(_xlsx_tables(content, budget)) as sheets:
            try:
                return _read_rows(sheets, budget, progress)
            except CalamineError as exc:
                raise KpjFileError(FileProblem.UNREADABLE, type(exc).__name__) from exc
    extension = os.path.splitext(file_name)[1].casefold()
    if extension in _OTHER_EXTENSIONS:
        raise KpjFileError(
            FileProblem.NOT_SPREADSHEET, f"a {extension} file; expected .xlsx or .csv"
        )
    try:
        return _read_rows(iter([_csv_table(_decode(content))]), budget, progress)
    except csv.Error as exc:  # e.g. a field over csv's size limit; the message quotes no data
        raise KpjFileError(FileProblem.UNREADABLE, f"CSV: {exc}") from exc


def check_file_size(size: int, budget: FileBudget = DEFAULT_BUDGET) -> None:
    """Refuse a file of `size` bytes over `budget.max_file_bytes` (TOO_LARGE), before reading it."""
    if size > budget.max_file_bytes:
        raise KpjFileError(
            FileProblem.TOO_LARGE, f"{_mib(size)} MiB, over {_mib(budget.max_file_bytes)} MiB"
        )


# A table is an iterator of (row number, cells); an XLSX gives one per sheet.
_Table = Iterator[tuple[int, Sequence[Any]]]


def _xlsx_tables(content: bytes, budget: FileBudget) -> Generator[_Table, None, None]:
    """The worksheets of an XLSX, read with calamine (Rust), once the zip passed `budget`.

    openpyxl's read-only mode took 7.5 s for a 144,000-row, 4-column file
    (plus a whole extra pass over a sheet without a <dimension> element);
    calamine reads it in under a second. Formula cells give their cached value.
    calamine allocates a sheet's whole rectangle, from A1 to its largest cell,
    before giving a row (a lone cell at XFD999990 asked for 524 GB), hence the
    checks of `check_xlsx_budget` first.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            names = set(archive.namelist())
            if "xl/workbook.xml" not in names:
                if "word/document.xml" in names:
                    raise KpjFileError(FileProblem.NOT_SPREADSHEET, "a Word document")
                if "content.xml" in names:
                    raise KpjFileError(
                        FileProblem.NOT_SPREADSHEET, "an OpenDocument file: save as .xlsx"
                    )
                raise KpjFileError(FileProblem.NOT_SPREADSHEET, "a zip archive without a workbook")
            check_xlsx_budget(archive, budget)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error) as exc:
        raise KpjFileError(FileProblem.UNREADABLE, "damaged zip archive") from exc
    from python_calamine import CalamineError, CalamineWorkbook

    try:
        workbook = CalamineWorkbook.from_filelike(io.BytesIO(content))
    except CalamineError as exc:
        raise KpjFileError(FileProblem.UNREADABLE, type(exc).__name__) from exc
    return _sheets(workbook, budget)


def check_xlsx_budget(archive: zipfile.ZipFile, budget: FileBudget) -> None:
    """Refuse an XLSX zip over `budget` without unpacking more than its XML, a chunk at a time.

    From the zip's directory: the number of members, each member's declared
    unpacked size, their total, and the compression ratio of each member of
    at least `RATIO_FLOOR_BYTES`. Then every member is streamed (Python's zip
    reader never gives more than the declared size) looking for each sheet's
    declared `<dimension ref=...>` and the largest row and cell reference
    (`r="XFD999990"`): the rows, columns and cells they span must fit. A row
    or cell without a reference is counted by the parser one after the other,
    so it cannot reach further than the unpacked bytes allow. Raises
    KpjFileError (TOO_LARGE or TOO_MANY_ROWS).
    """
    members = archive.infolist()
    if len(members) > budget.max_members:
        raise KpjFileError(
            FileProblem.TOO_LARGE, f"{len(members)} parts in the zip, over {budget.max_members}"
        )
    unpacked = 0
    for info in members:
        unpacked += info.file_size
        if unpacked > budget.max_unpacked_bytes:
            raise KpjFileError(
                FileProblem.TOO_LARGE,
                f"unpacks to over {_mib(budget.max_unpacked_bytes)} MiB",
            )
        if info.file_size >= RATIO_FLOOR_BYTES and info.file_size > budget.max_ratio * max(
            info.compress_size, 1
        ):
            ratio = info.file_size // max(info.compress_size, 1)
            raise KpjFileError(FileProblem.TOO_LARGE, f"a part compressed {ratio}:1")
    sheets = _worksheet_parts(archive)
    for info in members:
        if info.filename in sheets or not (
            info.is_dir()
            or info.filename.startswith(_NOT_SHEETS)
            or info.filename.endswith(".rels")
        ):
            _check_extent(*_scan_extent(archive, info), budget)


def _worksheet_parts(archive: zipfile.ZipFile) -> set[str]:
    """The members the workbook's relationships name as worksheets (resolved as calamine does)."""
    try:
        info = archive.getinfo("xl/_rels/workbook.xml.rels")
    except KeyError:
        return set()
    if info.file_size > RATIO_FLOOR_BYTES:  # a few hundred bytes per sheet
        raise KpjFileError(FileProblem.TOO_LARGE, "the workbook names too many parts")
    parts = set()
    for target in _SHEET_TARGET.findall(archive.read(info)):
        name = target.decode("utf-8", "replace")
        name = name[1:] if name.startswith("/") else posixpath.join("xl", name)
        parts.add(posixpath.normpath(name))
    return parts


def _scan_extent(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[int, int, int]:
    """(last row, last column, cells at most) of one zip member's sheet; 0s for no references.

    The last row and column are those of the declared dimension and of any
    reference from column AA or row 100,000 on, else 0; the cells count
    nearer references as reaching column Z and row 99,999. Only such far
    references are matched: looking at each of a 144,000-row sheet's 720,000
    references took longer than calamine's read.
    """
    last_row = last_column = 0
    found = False
    tail = b""
    with archive.open(info) as member:
        while chunk := member.read(_SCAN_CHUNK):
            # A reference cut by the chunk boundary is read whole in the next round.
            text = tail + chunk
            for match in _DIMENSION.finditer(text):
                found = True
                for end in match.group(1).decode("latin-1").split(":"):
                    row, column = _reference(end)
                    last_row, last_column = max(last_row, row), max(last_column, column)
            if not found and _ANY_REFERENCE.search(text):
                found = True
            # Builtins over the whole chunk: a 144,000-row sheet has 220,000 six-digit rows.
            rows = _LONG_ROW.findall(text)
            if rows:
                if max(map(len, rows)) > 9:
                    return 1 << 40, last_column, 1 << 40
                last_row = max(last_row, *map(int, rows))
            columns = set(_WIDE_COLUMN.findall(text))
            if columns:
                last_column = max(last_column, *map(_column_number, columns))
            tail = text[-64:]
    if not found:
        return 0, 0, 0
    return last_row, last_column, max(last_row, _NEAR_ROWS) * max(last_column, _NEAR_COLUMNS)


def _reference(text: str) -> tuple[int, int]:
    """ "$XFD$999990" -> (999990, 16384); a part that is missing or not a reference is 0."""
    match = _RANGE_END.match(text.strip())
    if match is None:
        return 0, 0
    letters, digits = match.groups()
    row = (1 << 40) if len(digits) > 9 else int(digits or 0)
    return row, _column_number(letters.encode()) if letters else 0


def _column_number(letters: bytes) -> int:
    """b"A" -> 1, b"XFD" -> 16384; anything longer than Excel's three letters is huge."""
    if len(letters) > 3:
        return 1 << 20
    number = 0
    for letter in letters.upper():
        number = number * 26 + letter - 64
    return number


def _check_extent(last_row: int, last_column: int, cells: int, budget: FileBudget) -> None:
    if last_row > budget.max_sheet_rows:
        raise KpjFileError(FileProblem.TOO_MANY_ROWS, f"a sheet reaches row {last_row}")
    if last_column > budget.max_columns:
        raise KpjFileError(
            FileProblem.TOO_LARGE,
            f"a sheet reaches column {last_column}, over {budget.max_columns}",
        )
    if cells > budget.max_cells:
        raise KpjFileError(
            FileProblem.TOO_LARGE, f"a sheet spans {cells} cells, over {budget.max_cells}"
        )


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f}".removesuffix(".0")


def _sheets(workbook: CalamineWorkbook, budget: FileBudget) -> Generator[_Table, None, None]:
    from python_calamine import SheetTypeEnum

    with workbook:
        for index, sheet_info in enumerate(workbook.sheets_metadata):
            if sheet_info.typ is not SheetTypeEnum.WorkSheet:  # chart and macro sheets
                continue
            sheet = workbook.get_sheet_by_index(index)
            end = sheet.end
            if end is None:  # no cells at all
                continue
            # Empty rows are allowed, but not without bound: the sheet is read whole.
            if end[0] >= budget.max_sheet_rows:
                raise KpjFileError(FileProblem.TOO_MANY_ROWS, f"{end[0] + 1} rows in the sheet")
            # Without the empty area above and left of the first cell, positions are
            # those of the spreadsheet: row 1 is row 1 (calamine gives "" for an empty cell).
            yield enumerate(sheet.to_python(skip_empty_area=False), 1)


def _decode(content: bytes) -> str:
    """The text of a CSV file; binary content is refused as NOT_SPREADSHEET."""
    if content.startswith((b"\xff\xfe", b"\xfe\xff")):  # Excel's "Unicode text" export
        try:
            return content.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise KpjFileError(FileProblem.UNREADABLE, "damaged UTF-16 text") from exc
    text = None
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            text = content.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    if text is None:
        text = content.decode("latin-1")
    sample = text[:_BINARY_SAMPLE]
    controls = len(_CONTROL.findall(sample))
    if "\x00" in text or controls * _BINARY_CONTROL_RATIO > len(sample):
        raise KpjFileError(FileProblem.NOT_SPREADSHEET, "binary content, not a CSV text file")
    return text


def _csv_table(text: str) -> _Table:
    """The CSV read with the delimiter that gives a recognisable header row."""
    lines = list(itertools.islice(io.StringIO(text, newline=""), HEADER_SEARCH_ROWS * 2))
    best: tuple[int, int, str] | None = None
    for delimiter in _CSV_DELIMITERS:
        top = list(csv.reader(lines, delimiter=delimiter))[:HEADER_SEARCH_ROWS]
        for cells in top:
            columns = _columns(cells)
            if columns is not None:
                score = (2 if columns[1] is not None else 1, len(cells))
                if best is None or score > best[:2]:
                    best = (*score, delimiter)
                break
    if best is not None:
        delimiter = best[2]
    else:  # no header: split like the first line, so the error can name its cells
        first = next((line for line in lines if line.strip()), "")
        delimiter = max(_CSV_DELIMITERS, key=first.count)
    return enumerate(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter), 1)


def _columns(cells: Sequence[Any]) -> tuple[int, int | None] | None:
    """(NIK column, KPJ column) when `cells` is a header row with a NIK column."""
    nik = kpj = None
    for index, cell in enumerate(cells):
        if not isinstance(cell, str):
            continue
        word = normalise_header(cell)
        if nik is None and word in NIK_HEADERS:
            nik = index
        elif kpj is None and word in KPJ_HEADERS:
            kpj = index
    return None if nik is None else (nik, kpj)


def _is_empty(cell: Any) -> bool:
    return cell is None or (isinstance(cell, str) and not cell.strip())


def _read_rows(
    tables: Iterator[_Table], budget: FileBudget, progress: Callable[[int], object] | None
) -> tuple[list[KpjRow], int]:
    first_seen: Sequence[Any] | None = None
    any_rows = False
    for table in tables:
        header: tuple[int, int | None] | None = None
        for row_number, cells in table:
            if any(not _is_empty(cell) for cell in cells):
                any_rows = True
                if first_seen is None:
                    first_seen = cells
                header = _columns(cells)
                if header is not None:
                    break
            if row_number >= HEADER_SEARCH_ROWS:
                break
        if header is None:
            continue
        nik_column, kpj_column = header
        if kpj_column is None:
            raise KpjFileError(FileProblem.NO_KPJ_COLUMN, _headers_found(cells))
        return _data_rows(table, nik_column, kpj_column, budget, progress)
    if not any_rows:
        raise KpjFileError(FileProblem.EMPTY, "no rows")
    raise KpjFileError(FileProblem.NO_NIK_COLUMN, _headers_found(first_seen or ()))


def _headers_found(cells: Sequence[Any]) -> str:
    words = [str(cell).strip()[:40] for cell in cells if not _is_empty(cell)]
    return ", ".join(words[:15])


def _data_rows(
    table: _Table,
    nik_column: int,
    kpj_column: int,
    budget: FileBudget,
    progress: Callable[[int], object] | None,
) -> tuple[list[KpjRow], int]:
    rows: list[KpjRow] = []
    empty = 0
    max_rows, max_sheet_rows = budget.max_rows, budget.max_sheet_rows
    for row_number, cells in table:
        if all(_is_empty(cell) for cell in cells):
            empty += 1
            if row_number > max_sheet_rows:  # a CSV of empty lines: it has no end declared
                raise KpjFileError(FileProblem.TOO_MANY_ROWS, f"more than {max_sheet_rows} rows")
            continue
        if len(rows) >= max_rows:
            raise KpjFileError(FileProblem.TOO_MANY_ROWS, f"more than {max_rows} rows")
        nik_cell = cells[nik_column] if nik_column < len(cells) else None
        kpj_cell = cells[kpj_column] if kpj_column < len(cells) else None
        nik, problem, shown = read_nik_cell(nik_cell)
        rows.append(KpjRow(row_number, nik, problem, shown, kpj_text(kpj_cell)))
        if progress is not None and len(rows) % PROGRESS_EVERY == 0:
            progress(PROGRESS_EVERY)
    if progress is not None and len(rows) % PROGRESS_EVERY:
        progress(len(rows) % PROGRESS_EVERY)
    if not rows:
        raise KpjFileError(FileProblem.EMPTY, "no rows under the header")
    return rows, empty


def read_nik_cell(cell: Any) -> tuple[str | None, NikCellProblem | None, str]:
    """A NIK cell's value: (nik, problem, what to show the PIC)."""
    if isinstance(cell, bool) or not isinstance(cell, int | float | str):
        if cell is None:
            return None, NikCellProblem.EMPTY, ""
        return None, NikCellProblem.NON_DIGIT, _shown(str(cell))
    if isinstance(cell, int | float):
        if abs(cell) >= 1e15:
            return None, NikCellProblem.SCIENTIFIC, f"{float(cell):.5E}"
        if cell < 0 or not float(cell).is_integer():
            return None, NikCellProblem.NON_DIGIT, _shown(str(cell))
        text = str(int(cell))
    else:
        text = cell.strip()
        if _SCIENTIFIC.match(text):
            return None, NikCellProblem.SCIENTIFIC, _shown(text)
        # A leading apostrophe is how people force text in a spreadsheet.
        text = text.removeprefix("'")
    cleaned = strip_separators(text)
    if not cleaned:
        return None, NikCellProblem.EMPTY, ""
    if not is_ascii_digits(cleaned):
        return None, NikCellProblem.NON_DIGIT, _shown(text)
    if len(cleaned) != NIK_LENGTH:
        return None, NikCellProblem.LENGTH, _shown(cleaned)
    return cleaned, None, mask_nik(cleaned)


def _shown(text: str) -> str:
    """Cell text for the PIC, cut to 20 characters; a near-NIK never appears in full.

    When the text holds more than 8 digits, only the first 4 and the last 4
    digits stay visible (as in a masked NIK): a 15-digit typo is still personal data.
    """
    text = text[:_SHOWN_LENGTH]
    digits = len(_DIGIT.findall(text))
    if digits <= 8:
        return text
    seen = 0

    def mask(match: re.Match[str]) -> str:
        nonlocal seen
        seen += 1
        return match.group() if seen <= 4 or seen > digits - 4 else "*"

    return _DIGIT.sub(mask, text)


def kpj_text(cell: Any) -> str:
    """A KPJ cell as text; a number as its digits (11 digits are exact in a spreadsheet)."""
    if cell is None or isinstance(cell, bool):
        return "" if cell is None else str(cell)
    if isinstance(cell, int):
        return str(cell)
    if isinstance(cell, float):
        return str(int(cell)) if cell.is_integer() and abs(cell) < 1e15 else repr(cell)
    return str(cell).strip().removeprefix("'")
