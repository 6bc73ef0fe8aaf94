"""The files a PIC exchanges with the BPJS Ketenagakerjaan branch (SPEC 4.5).

Out: the collective registration file (XLSX), one row per enrollment of a
submission batch, streamed by `storage.xlsx_stream` so memory stays flat
however many rows there are. In: the file BPJS sends back mapping NIK to KPJ (CSV or XLSX),
read into `KpjRow`s for the import preview (`storage.collective`).

No database here; bytes in, bytes out.

Language of the collective file: the headers and the words for sex, occupation
and payment plan are fixed Indonesian constants below, not catalogue entries.
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
import re
import zipfile
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime
from enum import StrEnum
from types import TracebackType
from typing import Any, BinaryIO

from python_calamine import CalamineError, CalamineWorkbook, SheetTypeEnum

from domain._digits import is_ascii_digits, strip_separators
from domain.nik import NIK_LENGTH, mask_nik
from domain.vocabulary import Occupation, PaymentPlan, Sex
from storage.xlsx_stream import Cell, SheetWriter, Style

# --- the collective file (out) ----------------------------------------------------------

SHEET_TITLE = "Peserta"
FILE_TITLE = "Pendaftaran Kolektif Peserta BPJS Ketenagakerjaan Bukan Penerima Upah (BPU)"
#: Labels of the title block, one per row above the header row.
BATCH_LABEL = "Nomor Batch"
OPD_LABEL = "OPD"
DATE_LABEL = "Tanggal"
COLLECTIVE_HEADERS: tuple[str, ...] = (
    "No",
    "NIK",
    "Nama Lengkap (sesuai KTP)",
    "Tanggal Lahir",
    "Jenis Kelamin (L/P)",
    "No. HP",
    "Desa/Kelurahan",
    "Kecamatan",
    "Pekerjaan",
    "NIP ASN Penanggung",
    "Nama ASN Penanggung",
    "Cara Bayar",
    "Bulan Pertama Kepesertaan",
)
#: Row of the column headers (1-based); the data starts right below.
HEADER_ROW = 6
_COLUMN_WIDTHS = (6, 20, 32, 13, 10, 16, 22, 22, 28, 21, 32, 26, 14)

SEX_WORDS: Mapping[Sex, str] = {Sex.MALE: "L", Sex.FEMALE: "P"}
OCCUPATION_WORDS: Mapping[Occupation, str] = {
    Occupation.FAMILY_MEMBER: "Anggota keluarga",
    Occupation.HOUSEHOLD_ASSISTANT: "Asisten rumah tangga",
    Occupation.GARDEN_WORKER: "Tukang kebun",
    Occupation.DRIVER: "Sopir",
    Occupation.HOUSE_GUARD: "Penjaga rumah",
    Occupation.PLACE_OF_WORSHIP_WORKER: "Marbot / pengurus rumah ibadah",
    Occupation.FISHER: "Nelayan",
    Occupation.OJOL_RIDER: "Pengemudi ojek online",
    Occupation.OTHER: "Lainnya",
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
    "data (UU No. 27 Tahun 2022 tentang Pelindungan Data Pribadi); NIK, nama, tanggal "
    "lahir, jenis kelamin, nomor HP dan alamatnya tidak dicantumkan."
)
DATE_FORMAT = "DD/MM/YYYY"
MONTH_FORMAT = "MM/YYYY"
TEXT_FORMAT = "@"


@dataclasses.dataclass(frozen=True, slots=True)
class CollectiveRow:
    """One enrollment as it goes to BPJS; the NIK in full (the only place it leaves encrypted).

    `erased`: the worker had their data erased after the batch went out; the
    row keeps its place (and the enrollment's own cells) and shows
    `ERASED_ROW_NAME`, with the personal cells empty (`erased_row`).
    """

    nik: str
    full_name: str
    birth_date: date | None
    sex: Sex | None
    phone_e164: str | None
    village: str
    district: str
    occupation: Occupation
    sponsor_nip: str
    sponsor_name: str
    plan: PaymentPlan
    first_month: date
    erased: bool = False


def erased_row(
    *,
    occupation: Occupation,
    sponsor_nip: str,
    sponsor_name: str,
    plan: PaymentPlan,
    first_month: date,
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
    )


def _national_phone(phone_e164: str | None) -> str | None:
    """+6281234567890 -> 081234567890, the form written on Indonesian forms; others as stored."""
    if phone_e164 is None:
        return None
    if phone_e164.startswith("+62"):
        return "0" + phone_e164[3:]
    return phone_e164


_TEXT = Style(TEXT_FORMAT)
_BOLD = Style(bold=True)
_DATE = Style(DATE_FORMAT)
_MONTH = Style(MONTH_FORMAT)


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
    ) -> None:
        if created_at.tzinfo is None:
            raise ValueError("created_at must be an aware datetime")
        self.rows_written = 0
        self._sheet = SheetWriter(
            target,
            sheet_name=SHEET_TITLE,
            column_widths=_COLUMN_WIDTHS,
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
            append([Cell(header, _BOLD) for header in COLLECTIVE_HEADERS])
        except BaseException:
            self._sheet.abort()
            raise

    def write(self, rows: Iterable[CollectiveRow]) -> int:
        """Append `rows` in order, numbered on from the rows before; returns how many."""
        append = self._sheet.append
        number = self.rows_written
        for row in rows:
            number += 1
            if row.erased:
                append(
                    (
                        number,
                        None,
                        row.full_name,
                        None,
                        None,
                        None,
                        None,
                        None,
                        OCCUPATION_WORDS[row.occupation],
                        Cell(row.sponsor_nip, _TEXT),
                        row.sponsor_name,
                        PLAN_WORDS[row.plan],
                        Cell(row.first_month.replace(day=1), _MONTH),
                    )
                )
                continue
            assert row.sex is not None and row.birth_date is not None  # only erased rows lack them
            append(
                (
                    number,
                    Cell(row.nik, _TEXT),
                    row.full_name,
                    Cell(row.birth_date, _DATE),
                    SEX_WORDS[row.sex],
                    Cell(_national_phone(row.phone_e164), _TEXT),
                    row.village,
                    row.district,
                    OCCUPATION_WORDS[row.occupation],
                    Cell(row.sponsor_nip, _TEXT),
                    row.sponsor_name,
                    PLAN_WORDS[row.plan],
                    Cell(row.first_month.replace(day=1), _MONTH),
                )
            )
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
    """
    with CollectiveWriter(
        target,
        batch_number=batch_number,
        opd_name=opd_name,
        created_at=created_at,
        erased_rows=erased_rows,
    ) as writer:
        writer.write(rows)
    return writer.rows_written


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
#: An XLSX that unpacks to more than this is refused before parsing (zip bombs).
MAX_UNPACKED_BYTES = 1 << 30
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
    max_rows: int = 500_000,
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
    cannot be used at all.
    """
    if not content.strip():
        raise KpjFileError(FileProblem.EMPTY, "the file has no content")
    for magic, what in _OTHER_FORMATS:
        if content.startswith(magic):
            raise KpjFileError(FileProblem.NOT_SPREADSHEET, what)
    if content.startswith(_ZIP_MAGIC):
        with contextlib.closing(_xlsx_tables(content, max_rows)) as sheets:
            try:
                return _read_rows(sheets, max_rows, progress)
            except CalamineError as exc:
                raise KpjFileError(FileProblem.UNREADABLE, type(exc).__name__) from exc
    extension = os.path.splitext(file_name)[1].casefold()
    if extension in _OTHER_EXTENSIONS:
        raise KpjFileError(
            FileProblem.NOT_SPREADSHEET, f"a {extension} file; expected .xlsx or .csv"
        )
    try:
        return _read_rows(iter([_csv_table(_decode(content))]), max_rows, progress)
    except csv.Error as exc:  # e.g. a field over csv's size limit; the message quotes no data
        raise KpjFileError(FileProblem.UNREADABLE, f"CSV: {exc}") from exc


# A table is an iterator of (row number, cells); an XLSX gives one per sheet.
_Table = Iterator[tuple[int, Sequence[Any]]]


def _xlsx_tables(content: bytes, max_rows: int) -> Generator[_Table, None, None]:
    """The worksheets of an XLSX, read with calamine (Rust).

    openpyxl's read-only mode took 7.5 s for a 144,000-row, 4-column file
    (plus a whole extra pass over a sheet without a <dimension> element);
    calamine reads it in under a second. Formula cells give their cached value.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            names = set(archive.namelist())
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise KpjFileError(FileProblem.UNREADABLE, "damaged zip archive") from exc
    if "xl/workbook.xml" not in names:
        if "word/document.xml" in names:
            raise KpjFileError(FileProblem.NOT_SPREADSHEET, "a Word document")
        if "content.xml" in names:
            raise KpjFileError(FileProblem.NOT_SPREADSHEET, "an OpenDocument file: save as .xlsx")
        raise KpjFileError(FileProblem.NOT_SPREADSHEET, "a zip archive without a workbook")
    if unpacked > MAX_UNPACKED_BYTES:
        raise KpjFileError(FileProblem.UNREADABLE, f"unpacks to {unpacked >> 20} MiB")
    try:
        workbook = CalamineWorkbook.from_filelike(io.BytesIO(content))
    except CalamineError as exc:
        raise KpjFileError(FileProblem.UNREADABLE, type(exc).__name__) from exc
    return _sheets(workbook, max_rows)


def _sheets(workbook: CalamineWorkbook, max_rows: int) -> Generator[_Table, None, None]:
    with workbook:
        for index, sheet_info in enumerate(workbook.sheets_metadata):
            if sheet_info.typ is not SheetTypeEnum.WorkSheet:  # chart and macro sheets
                continue
            sheet = workbook.get_sheet_by_index(index)
            end = sheet.end
            if end is None:  # no cells at all
                continue
            # Empty rows are allowed, but not without bound: the sheet is read whole.
            if end[0] >= 2 * max_rows + HEADER_SEARCH_ROWS:
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
    tables: Iterator[_Table], max_rows: int, progress: Callable[[int], object] | None
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
        return _data_rows(table, nik_column, kpj_column, max_rows, progress)
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
    max_rows: int,
    progress: Callable[[int], object] | None,
) -> tuple[list[KpjRow], int]:
    rows: list[KpjRow] = []
    empty = 0
    for row_number, cells in table:
        if all(_is_empty(cell) for cell in cells):
            empty += 1
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
