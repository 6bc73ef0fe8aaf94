"""The coverage page as a download: CSV and XLSX of one `CoverageDashboard` (issue 13).

Both files hold the same rows (`coverage_rows`), in sections a person reads
top to bottom and a spreadsheet filters: the summary (tiles and target), the
table per OPD with a total line, the table per village, the weekly series and
the paid-until distribution; each section starts with its title and a header
row, and a blank row separates them. One sheet, so the CSV and the XLSX agree
cell for cell and the XLSX is written by `storage.xlsx_stream` (no new
dependency).

Labels come from `translate` (a `handlers.i18n.Translator`, keys `coverage.*`,
`status.*`); without one, English. Text cells that a spreadsheet would run as a
formula (an OPD or village name beginning with = + - @) are escaped as in the
collective file (`collective_file.csv_text`) in the CSV; the XLSX writes
inline strings, which are never formulas.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time

from domain.dues import PaidStanding
from domain.vocabulary import SponsorshipStatus
from storage.collective_file import csv_text
from storage.coverage import AreaRow, CoverageDashboard, OpdRow, WeekPoint
from storage.xlsx_stream import BOLD, DATE_ISO, Cell, CellValue, SheetWriter, Style

Translate = Callable[[str], str]

#: Characters Excel refuses in a sheet name.
_SHEET_UNSAFE = re.compile(r"[\[\]:*?/\\]")

#: A share (0..1) shown as a per cent with one decimal in the XLSX.
PERCENT = Style("0.0%")

#: The labels when no translator is given (the English catalogue's texts).
ENGLISH: dict[str, str] = {
    "coverage.title": "Coverage",
    "coverage.province": "Province (all OPDs)",
    "coverage.as_of": "As of",
    "coverage.section.summary": "Summary",
    "coverage.section.opds": "Per OPD",
    "coverage.section.areas": "Per village",
    "coverage.section.weeks": "Per week",
    "coverage.section.paid": "Paid-until (dues-bearing workers)",
    "coverage.item": "Item",
    "coverage.value": "Value",
    "coverage.asn_registered": "ASN registered",
    "coverage.asn_sponsoring": "ASN sponsoring",
    "coverage.workers": "Workers",
    "coverage.active_cards": "Active cards",
    "coverage.dues_bearing": "Dues-bearing",
    "coverage.paid_up": "Paid up",
    "coverage.paid_up_share": "Paid-up share",
    "coverage.target": "Target (workers)",
    "coverage.progress": "Target reached",
    "coverage.opd_code": "OPD code",
    "coverage.opd_name": "OPD",
    "coverage.total": "All OPDs",
    "coverage.regency": "Regency/city",
    "coverage.district": "District",
    "coverage.village": "Village",
    "coverage.erased": "(erased workers)",
    "coverage.week_start": "Week from",
    "coverage.enrollments": "Enrollments",
    "coverage.cards": "Cards issued",
    "coverage.lapses": "Lapses",
    "coverage.standing": "Standing",
    "coverage.count": "Count",
    "paid_standing.paid_ahead": "paid ahead",
    "paid_standing.up_to_date": "up to date",
    "paid_standing.arrears_1": "1 month overdue",
    "paid_standing.arrears_2": "2 months overdue",
    "paid_standing.arrears_3": "3 or more months overdue",
    "status.waiting_for_pic": "waiting for the PIC",
    "status.returned": "returned for correction",
    "status.accepted": "accepted by the PIC",
    "status.submitted": "submitted to BPJS",
    "status.active": "active",
    "status.card_handed_over": "card handed over",
    "status.lapsed": "lapsed (dues unpaid)",
    "status.ended": "ended",
}


def english(key: str) -> str:
    return ENGLISH[key]


Row = list[CellValue | Cell]


def _share(value: float | None) -> CellValue | Cell:
    return None if value is None else Cell(round(value, 4), PERCENT)


def _pair(label: str, value: CellValue | Cell) -> Row:
    return [label, value]


def _week_cells(week: WeekPoint) -> Row:
    return [week.week_start, week.enrollments, week.cards, week.lapses]


def _opd_cells(row: OpdRow) -> Row:
    return [
        row.opd_code,
        row.opd_name,
        row.asn_registered,
        row.asn_sponsoring,
        *(row.by_status[status] for status in SponsorshipStatus),
        row.workers,
        row.active_cards,
        *(row.paid[standing] for standing in PaidStanding),
        _share(row.paid_up_share),
        row.target,
        _share(row.progress.share),
    ]


def _area_cells(row: AreaRow, translate: Translate) -> Row:
    places: list[CellValue | Cell] = (
        ["", "", translate("coverage.erased")]
        if row.erased
        else [row.regency, row.district, row.village]
    )
    return [
        *places,
        *(row.by_status[status] for status in SponsorshipStatus),
        row.workers,
        row.active_cards,
    ]


def coverage_rows(dashboard: CoverageDashboard, translate: Translate = english) -> list[Row]:
    """The download's rows: sections as the module docstring says; header cells are bold."""
    t = translate

    def header(*keys: str) -> Row:
        return [Cell(t(key), BOLD) for key in keys]

    statuses = [f"status.{status.value}" for status in SponsorshipStatus]
    standings = [f"paid_standing.{standing.value}" for standing in PaidStanding]
    tiles = dashboard.tiles
    rows: list[Row] = [
        [
            Cell(t("coverage.title"), BOLD),
            dashboard.scope_name
            if dashboard.opd_id is not None and dashboard.scope_name
            else t("coverage.province"),
        ],
        [t("coverage.as_of"), dashboard.today],
        [],
        [Cell(t("coverage.section.summary"), BOLD)],
        header("coverage.item", "coverage.value"),
        [t("coverage.asn_registered"), tiles.asn_registered],
        [t("coverage.asn_sponsoring"), tiles.asn_sponsoring],
        *(
            _pair(t(key), tiles.workers_by_status[status])
            for key, status in zip(statuses, SponsorshipStatus, strict=True)
        ),
        [t("coverage.workers"), tiles.workers],
        [t("coverage.active_cards"), tiles.active_cards],
        [t("coverage.dues_bearing"), tiles.dues_bearing],
        [t("coverage.paid_up"), tiles.paid_up],
        [t("coverage.paid_up_share"), _share(tiles.paid_up_share)],
        [t("coverage.target"), dashboard.progress.target],
        [t("coverage.progress"), _share(dashboard.progress.share)],
        [],
        [Cell(t("coverage.section.opds"), BOLD)],
        header(
            "coverage.opd_code",
            "coverage.opd_name",
            "coverage.asn_registered",
            "coverage.asn_sponsoring",
            *statuses,
            "coverage.workers",
            "coverage.active_cards",
            *standings,
            "coverage.paid_up_share",
            "coverage.target",
            "coverage.progress",
        ),
        *(_opd_cells(row) for row in dashboard.opds),
    ]
    if dashboard.opd_id is None:
        total = OpdRow(
            opd_id=0,
            opd_code="",
            opd_name=t("coverage.total"),
            asn_registered=tiles.asn_registered,
            asn_sponsoring=tiles.asn_sponsoring,
            by_status=tiles.workers_by_status,
            paid=dashboard.paid,
            target=dashboard.progress.target,
        )
        rows.append(
            [Cell(cell, BOLD) if isinstance(cell, str) else cell for cell in _opd_cells(total)]
        )
    rows += [
        [],
        [Cell(t("coverage.section.areas"), BOLD)],
        header(
            "coverage.regency",
            "coverage.district",
            "coverage.village",
            *statuses,
            "coverage.workers",
            "coverage.active_cards",
        ),
        *(_area_cells(row, t) for row in dashboard.areas),
        [],
        [Cell(t("coverage.section.weeks"), BOLD)],
        header("coverage.week_start", "coverage.enrollments", "coverage.cards", "coverage.lapses"),
        *(_week_cells(week) for week in dashboard.weeks),
        [],
        [Cell(t("coverage.section.paid"), BOLD)],
        header("coverage.standing", "coverage.count"),
        *(
            _pair(t(key), dashboard.paid[standing])
            for key, standing in zip(standings, PaidStanding, strict=True)
        ),
    ]
    return rows


def _csv_cell(cell: CellValue | Cell) -> str:
    value = cell.value if isinstance(cell, Cell) else cell
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, int | float):
        return str(value)
    return csv_text(value)


def coverage_csv(dashboard: CoverageDashboard, translate: Translate = english) -> bytes:
    """The dashboard as CSV: UTF-8 with a byte-order mark (a spreadsheet reads the accents),
    CRLF lines, dates ISO, shares as fractions (0.27), formula-looking text escaped."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")
    for row in coverage_rows(dashboard, translate):
        writer.writerow([_csv_cell(cell) for cell in row])
    return buffer.getvalue().encode("utf-8-sig")


def coverage_xlsx(dashboard: CoverageDashboard, translate: Translate = english) -> bytes:
    """The dashboard as a one-sheet XLSX (the same rows as `coverage_csv`); deterministic:
    the workbook's time is the dashboard's day."""
    target = io.BytesIO()
    stamp = datetime.combine(dashboard.today, time(0), tzinfo=UTC)
    with SheetWriter(
        target,
        sheet_name=_SHEET_UNSAFE.sub("", translate("coverage.title"))[:31] or "Coverage",
        column_widths=(22, 36, 16, 16),
        title=translate("coverage.title"),
        creator="SERTAKAN",
        created_at=stamp,
    ) as sheet:
        for row in coverage_rows(dashboard, translate):
            sheet.append(
                [
                    Cell(cell, DATE_ISO)
                    if isinstance(cell, date) and not isinstance(cell, datetime)
                    else cell
                    for cell in row
                ]
            )
    return target.getvalue()
