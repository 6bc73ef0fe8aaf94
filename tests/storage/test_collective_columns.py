"""The collective file's column map: the shipped default, a province's own, refused maps."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from openpyxl import load_workbook

from sertakan_data import COLLECTIVE_COLUMNS, shipped
from storage.collective_columns import (
    DEFAULT_COLUMN_MAP,
    ColumnMapError,
    ColumnSource,
    load_column_map,
    parse_column_map,
)
from storage.collective_file import HEADER_ROW, write_collective_xlsx
from tests.storage.test_collective_file import CREATED, collective_row

SHIPPED = shipped(COLLECTIVE_COLUMNS)


def test_the_shipped_file_is_the_built_in_default() -> None:
    assert load_column_map(SHIPPED) == DEFAULT_COLUMN_MAP


def test_the_default_has_programme_income_occupation_relationship_and_address_apart() -> None:
    sources = {column.source for column in DEFAULT_COLUMN_MAP.columns}
    assert {
        ColumnSource.OCCUPATION,
        ColumnSource.RELATIONSHIP,
        ColumnSource.DECLARED_INCOME,
        ColumnSource.BIRTH_PLACE,
        ColumnSource.STREET_ADDRESS,
        ColumnSource.VILLAGE,
        ColumnSource.DISTRICT,
        ColumnSource.REGENCY,
        ColumnSource.WORK_LOCATION,
    } <= sources
    programme = [column for column in DEFAULT_COLUMN_MAP.columns if column.header == "Program"]
    assert [column.value for column in programme] == ["JKK+JKM"]


def test_a_provinces_own_map_decides_headers_order_and_fixed_values() -> None:
    columns = parse_column_map(
        "header,source\n"
        + "NO. KTP,nik\n"
        + "NAMA,full_name\n"
        + "PEKERJAAN,occupation\n"
        + "UPAH,declared_income\n"
        + "PROGRAM,value:JKK-JKM\n"
        + "KANTOR CABANG,value:Bengkulu\n"
    )
    target = io.BytesIO()
    write_collective_xlsx(
        [collective_row(1)],
        target,
        batch_number="B-1",
        opd_name="Dinas Kesehatan",
        created_at=CREATED,
        columns=columns,
    )
    sheet = load_workbook(target).active
    assert sheet is not None
    assert [cell.value for cell in sheet[HEADER_ROW]] == [
        "NO. KTP",
        "NAMA",
        "PEKERJAAN",
        "UPAH",
        "PROGRAM",
        "KANTOR CABANG",
    ]
    assert [cell.value for cell in sheet[HEADER_ROW + 1]] == [
        "3201000000000001",
        "Siti Aminah 1",
        "Asisten rumah tangga",
        1_000_000,
        "JKK-JKM",
        "Bengkulu",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no heading row"),
        ("NIK,nik\n", "line 1: the first row must name the columns"),
        ("header,source\n", "no columns under the heading row"),
        ("header,source\nNIK,nik\nNama,nama\n", "line 3: unknown source 'nama'"),
        ("header,source\nNIK,nik\nnik,full_name\n", "line 3: the header 'nik' is used twice"),
        ("header,source\nNama,full_name\n", "no column with source nik"),
        ("header,source\nNIK,nik\n,full_name\n", "line 3: empty header"),
        ("header,source\nNIK,nik\nProgram,value:\n", "line 3: empty fixed value"),
        ("header,source,width\nNIK,nik,lebar\n", "line 2: width 'lebar' is not a number"),
    ],
)
def test_a_map_that_cannot_be_used_is_refused_with_its_line(text: str, message: str) -> None:
    with pytest.raises(ColumnMapError, match=message):
        parse_column_map(text)


def test_comments_blank_lines_and_a_byte_order_mark_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "map.csv"
    path.write_bytes("\ufeff# note\n\nheader,source,width\n\nNIK,NIK,\n".encode())
    assert load_column_map(path).columns[0].source is ColumnSource.NIK
    assert load_column_map(path).columns[0].width is None
