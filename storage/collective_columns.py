"""The collective file's columns as data: which header holds which field (PRODUCT 4.5).

Each BPJS Ketenagakerjaan branch has its own BPU collective template, so the
columns are a map a province edits (`PROGRAM_COLLECTIVE_COLUMNS_FILE`, a CSV
`header,source,width`) rather than code. `source` is one of `ColumnSource`
(a field of the enrollment) or `value:<text>`, the same text on every row
(e.g. the programme, `value:JKK+JKM`). The shipped
`sertakan_data/collective_columns_bpu.csv` is `DEFAULT_COLUMN_MAP`.

The map is read and checked at start-up (`load_column_map`): an unknown
source, a repeated header or a missing NIK column is a `ColumnMapError`
naming the line, and the bot does not start. No I/O but the file read here.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from enum import StrEnum
from pathlib import Path

#: The prefix of a fixed value in the `source` cell.
VALUE_PREFIX = "value:"
#: Excel's limit of columns in a sheet.
MAX_COLUMNS = 16_384


class ColumnSource(StrEnum):
    """What a column of the collective file can hold, by the name used in the map."""

    ROW_NUMBER = "row_number"
    NIK = "nik"
    FULL_NAME = "full_name"
    BIRTH_PLACE = "birth_place"
    BIRTH_DATE = "birth_date"
    #: "L" or "P".
    SEX = "sex"
    #: The worker's phone as written in Indonesia (0812...), text.
    PHONE = "phone"
    STREET_ADDRESS = "street_address"
    VILLAGE = "village"
    DISTRICT = "district"
    REGENCY = "regency"
    #: Where the worker works: the regency of their address (informal work around home).
    WORK_LOCATION = "work_location"
    #: The occupation's word, or the text typed after "other".
    OCCUPATION = "occupation"
    #: The relationship to the sponsoring ASN.
    RELATIONSHIP = "relationship"
    #: The declared monthly income the dues are computed on: the lowest BPU bracket.
    DECLARED_INCOME = "declared_income"
    SPONSOR_NIP = "sponsor_nip"
    SPONSOR_NAME = "sponsor_name"
    #: How the dues are paid (monthly, quarterly, payroll deduction ...).
    PLAN = "plan"
    FIRST_MONTH = "first_month"


@dataclasses.dataclass(frozen=True, slots=True)
class Column:
    """One column: its header and either a field (`source`) or a fixed `value`."""

    header: str
    source: ColumnSource | None = None
    value: str | None = None
    #: Width in characters (None: Excel's default).
    width: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ColumnMap:
    """The columns of the collective file, left to right."""

    columns: tuple[Column, ...]

    @property
    def headers(self) -> tuple[str, ...]:
        return tuple(column.header for column in self.columns)

    @property
    def widths(self) -> tuple[float | None, ...]:
        return tuple(column.width for column in self.columns)


class ColumnMapError(ValueError):
    """The column map cannot be used; `line` is its line in the file (None: the whole file)."""

    def __init__(self, reason: str, *, line: int | None = None) -> None:
        super().__init__(f"line {line}: {reason}" if line is not None else reason)
        self.reason = reason
        self.line = line


def _field(header: str, source: ColumnSource, width: float) -> Column:
    return Column(header, source=source, width=width)


#: The shipped default (`sertakan_data/collective_columns_bpu.csv` holds the same).
DEFAULT_COLUMN_MAP = ColumnMap(
    (
        _field("No", ColumnSource.ROW_NUMBER, 6),
        _field("NIK", ColumnSource.NIK, 20),
        _field("Nama Lengkap (sesuai KTP)", ColumnSource.FULL_NAME, 32),
        _field("Tempat Lahir", ColumnSource.BIRTH_PLACE, 18),
        _field("Tanggal Lahir", ColumnSource.BIRTH_DATE, 13),
        _field("Jenis Kelamin (L/P)", ColumnSource.SEX, 10),
        _field("No. HP", ColumnSource.PHONE, 16),
        _field("Alamat (Jalan, RT/RW)", ColumnSource.STREET_ADDRESS, 32),
        _field("Desa/Kelurahan", ColumnSource.VILLAGE, 22),
        _field("Kecamatan", ColumnSource.DISTRICT, 22),
        _field("Kabupaten/Kota", ColumnSource.REGENCY, 22),
        _field("Lokasi Kerja (Kabupaten/Kota)", ColumnSource.WORK_LOCATION, 22),
        _field("Jenis Pekerjaan", ColumnSource.OCCUPATION, 28),
        _field("Hubungan dengan ASN", ColumnSource.RELATIONSHIP, 24),
        _field("Penghasilan Dilaporkan (Rp)", ColumnSource.DECLARED_INCOME, 14),
        Column("Program", value="JKK+JKM", width=10),
        _field("NIP ASN Penanggung", ColumnSource.SPONSOR_NIP, 21),
        _field("Nama ASN Penanggung", ColumnSource.SPONSOR_NAME, 32),
        _field("Cara Bayar", ColumnSource.PLAN, 26),
        _field("Bulan Pertama Kepesertaan", ColumnSource.FIRST_MONTH, 14),
    )
)

_REQUIRED_HEADINGS = ("header", "source")


def parse_column_map(text: str) -> ColumnMap:
    """The column map of a CSV text (`header,source[,width]`; `#` lines are comments).

    Raises ColumnMapError naming the line: a missing heading row, an empty
    header, a header used twice, an unknown source (the known ones are
    listed), an empty fixed value, a width that is not a positive number, no
    NIK column (BPJS matches on it), or more columns than a sheet holds.
    """
    lines = [
        (number, line)
        for number, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        raise ColumnMapError("no heading row (header,source,width)")
    heading_line, heading = lines[0]
    names = [cell.strip().casefold() for cell in next(csv.reader([heading]))]
    if any(name not in names for name in _REQUIRED_HEADINGS):
        raise ColumnMapError(
            f"the first row must name the columns header,source,width; found {heading!r}",
            line=heading_line,
        )
    columns: list[Column] = []
    seen: set[str] = set()
    for number, line in lines[1:]:
        cells = dict(zip(names, (cell.strip() for cell in next(csv.reader([line]))), strict=False))
        column = _column(cells, number)
        key = column.header.casefold()
        if key in seen:
            raise ColumnMapError(f"the header {column.header!r} is used twice", line=number)
        seen.add(key)
        columns.append(column)
    if not columns:
        raise ColumnMapError("no columns under the heading row")
    if len(columns) > MAX_COLUMNS:
        raise ColumnMapError(f"{len(columns)} columns, more than a sheet holds ({MAX_COLUMNS})")
    if not any(column.source is ColumnSource.NIK for column in columns):
        raise ColumnMapError("no column with source nik: BPJS registers workers by NIK")
    return ColumnMap(tuple(columns))


def _column(cells: dict[str, str], line: int) -> Column:
    header = cells.get("header", "")
    source = cells.get("source", "")
    if not header:
        raise ColumnMapError("empty header", line=line)
    width = _width(cells.get("width", ""), line)
    if source.casefold().startswith(VALUE_PREFIX):
        value = source[len(VALUE_PREFIX) :].strip()
        if not value:
            raise ColumnMapError(f"empty fixed value for {header!r}", line=line)
        return Column(header, value=value, width=width)
    try:
        field = ColumnSource(source.casefold())
    except ValueError:
        known = ", ".join(s.value for s in ColumnSource)
        raise ColumnMapError(
            f"unknown source {source!r} for {header!r}; use one of {known}, or {VALUE_PREFIX}TEXT",
            line=line,
        ) from None
    return Column(header, source=field, width=width)


def _width(text: str, line: int) -> float | None:
    if not text:
        return None
    try:
        width = float(text)
    except ValueError:
        width = -1.0
    if not 0 < width <= 255:  # Excel's widest column
        raise ColumnMapError(f"width {text!r} is not a number from 1 to 255", line=line)
    return width


def load_column_map(path: Path) -> ColumnMap:
    """`parse_column_map` of a UTF-8 file (a byte-order mark is allowed)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ColumnMapError("not UTF-8 text: save the file as CSV UTF-8") from exc
    return parse_column_map(text)


def column_map_csv(columns: ColumnMap) -> str:
    """The map as the CSV `parse_column_map` reads (for the shipped file's test)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("header", "source", "width"))
    for column in columns.columns:
        source = (
            column.source.value
            if column.source is not None
            else VALUE_PREFIX + (column.value or "")
        )
        width = "" if column.width is None else f"{column.width:g}"
        writer.writerow((column.header, source, width))
    return out.getvalue()
