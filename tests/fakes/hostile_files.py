"""Crafted spreadsheets that once stopped the service (issue 11), built in memory in milliseconds.

- `far_cell_xlsx`: 1.6 KB; one cell at XFD999990 made calamine ask for 524 GB.
- `zip_bomb_xlsx`: a workbook whose sheet is 200 MiB of zeros packed to ~200 KB.
"""

from __future__ import annotations

import functools
import io
import zipfile
import zlib

_CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" '
    'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/xl/workbook.xml" ContentType="application/'
    'vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
    '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/'
    'vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
    "</Types>"
)
_ROOT_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    'relationships/officeDocument" Target="xl/workbook.xml"/>'
    "</Relationships>"
)
_WORKBOOK = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
    'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
    '<sheets><sheet name="KPJ" sheetId="1" r:id="rId1"/></sheets></workbook>'
)
_WORKBOOK_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    'relationships/worksheet" Target="{target}"/>'
    "</Relationships>"
)
HEADER_ROW = (
    '<row r="1"><c r="A1" t="inlineStr"><is><t>NIK</t></is></c>'
    '<c r="B1" t="inlineStr"><is><t>KPJ</t></is></c></row>'
)


def sheet_xml(cells: str, *, dimension: str | None) -> str:
    """A worksheet holding the header row and `cells` (row elements), with that dimension."""
    declared = "" if dimension is None else f'<dimension ref="{dimension}"/>'
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        f"{declared}<sheetData>{HEADER_ROW}{cells}</sheetData></worksheet>"
    )


_PARTS = {
    "[Content_Types].xml": _CONTENT_TYPES,
    "_rels/.rels": _ROOT_RELS,
    "xl/workbook.xml": _WORKBOOK,
    "xl/_rels/workbook.xml.rels": _WORKBOOK_RELS.format(target="worksheets/sheet1.xml"),
}


def workbook(sheet: bytes | str, *, sheet_part: str = "xl/worksheets/sheet1.xml") -> bytes:
    """A minimal XLSX around one sheet, stored at `sheet_part` (named so by the relationships)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in _PARTS.items():
            if name == "xl/_rels/workbook.xml.rels":
                text = _WORKBOOK_RELS.format(target=sheet_part.removeprefix("xl/"))
            archive.writestr(name, text)
        archive.writestr(sheet_part, sheet)
    return out.getvalue()


def far_cell_xlsx(cell: str = "XFD999990", *, dimension: str | None = "A1:XFD999990") -> bytes:
    """The 1.6 KB workbook of issue 11: the header row and one number at `cell`."""
    row = "".join(ch for ch in cell if ch.isdigit())
    cells = f'<row r="{row}"><c r="{cell}"><v>1</v></c></row>'
    return workbook(sheet_xml(cells, dimension=dimension))


@functools.cache
def zip_bomb_xlsx(unpacked_mib: int = 200) -> bytes:
    """A workbook whose sheet unpacks to `unpacked_mib` MiB of zeros (about 1 KB packed per MiB).

    The deflate stream of one MiB of zeros (flushed, so it stands alone) is
    repeated rather than compressing every MiB again: built in a tenth of a
    second instead of two.
    """
    mib = bytes(1 << 20)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = packer.compress(mib) + packer.flush(zlib.Z_FULL_FLUSH)
    stream = block * unpacked_mib + packer.flush()
    crc = 0
    for _ in range(unpacked_mib):
        crc = zlib.crc32(mib, crc)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in _PARTS.items():
            archive.writestr(name, text)
        # A member whose packed bytes are given: zipfile has no public call for that.
        info = zipfile.ZipInfo("xl/worksheets/sheet1.xml", date_time=(2026, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        info.file_size, info.compress_size, info.CRC = len(mib) * unpacked_mib, len(stream), crc
        assert archive.fp is not None
        info.header_offset = archive.fp.tell()
        archive.fp.write(info.FileHeader())
        archive.fp.write(stream)
        archive.filelist.append(info)
        archive.NameToInfo[info.filename] = info
        archive.start_dir = archive.fp.tell()
    return out.getvalue()
