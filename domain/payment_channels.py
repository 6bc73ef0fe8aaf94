"""Where BPJS Ketenagakerjaan dues are actually paid: a list a province edits.

The bot records payments; the money goes to BPJS through its own channels
(branch office, post office, banks, shops, the JMO app), which differ by
region and change over time. They are data (`sertakan_data/payment_channels.csv`,
PROGRAM_PAYMENT_CHANNELS_FILE), read once at start-up with
`load_payment_channels`, and shown in the info menu, at /bayar and in the
dues reminders.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path

from domain.vocabulary import Language

_REQUIRED_COLUMNS = ("name", "how_id")
_OPTIONAL_COLUMNS = ("name_en", "how_en")
#: A longer cell is a mistake (a pasted paragraph): chat lines stay readable.
MAX_CELL_CHARS = 300


class PaymentChannelsFileError(ValueError):
    """A payment channels file cannot be read; `line` is the 1-based line at fault."""

    def __init__(self, reason: str, *, line: int | None = None) -> None:
        self.reason = reason
        self.line = line
        super().__init__(f"line {line}: {reason}" if line is not None else reason)


@dataclasses.dataclass(slots=True, frozen=True)
class PaymentChannel:
    """One place or way to pay BPU dues, with how to pay there in each language."""

    name: str
    how_id: str
    name_en: str = ""
    how_en: str = ""

    def name_in(self, language: Language) -> str:
        """The name in `language` (Indonesian when no English one is given)."""
        return self.name_en if language is Language.ENGLISH and self.name_en else self.name

    def how_in(self, language: Language) -> str:
        """How to pay there in `language` (Indonesian when no English text is given)."""
        return self.how_en if language is Language.ENGLISH and self.how_en else self.how_id


def parse_payment_channels(text: str) -> tuple[PaymentChannel, ...]:
    """The channels of a CSV text, in file order.

    Header (any order, case-insensitive): `name,how_id` and optionally
    `name_en,how_en`. Blank lines and lines starting with "#" are skipped;
    extra columns are ignored. Raises PaymentChannelsFileError naming the line:
    a missing header column, an empty name or `how_id`, a cell over
    `MAX_CELL_CHARS`. An empty list is allowed (the texts then say to ask the PIC).
    """
    lines = [
        "" if line.lstrip().startswith("#") else line for line in text.lstrip("\ufeff").splitlines()
    ]
    reader = csv.reader(io.StringIO("\n".join(lines), newline=""))
    columns: list[str] | None = None
    found: list[PaymentChannel] = []
    for record in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in record):
            continue
        if columns is None:
            columns = [cell.strip().casefold() for cell in record]
            missing = [name for name in _REQUIRED_COLUMNS if name not in columns]
            if missing:
                raise PaymentChannelsFileError(
                    f"the header lacks the column(s) {', '.join(missing)}; found {record!r}",
                    line=line,
                )
            continue
        cells = {
            name: (record[index].strip() if index < len(record) else "")
            for index, name in enumerate(columns)
            if name in (*_REQUIRED_COLUMNS, *_OPTIONAL_COLUMNS)
        }
        for name in _REQUIRED_COLUMNS:
            if not cells.get(name):
                raise PaymentChannelsFileError(f"the {name} cell is empty", line=line)
        for name, value in cells.items():
            if len(value) > MAX_CELL_CHARS:
                raise PaymentChannelsFileError(
                    f"the {name} cell has {len(value)} characters (at most {MAX_CELL_CHARS})",
                    line=line,
                )
        found.append(PaymentChannel(**cells))
    return tuple(found)


def load_payment_channels(path: Path) -> tuple[PaymentChannel, ...]:
    """Read a payment channels CSV (UTF-8, see `parse_payment_channels`)."""
    return parse_payment_channels(path.read_text(encoding="utf-8"))
