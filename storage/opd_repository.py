"""The OPD list: loading the administrator's CSV, lookup, search and "did you mean".

The list is small (tens of rows per province, a few hundred at most), so search
ranks in Python after a coarse SQL filter and `closest` scores every active OPD.
The repository never commits: the caller's unit of work does.
"""

from __future__ import annotations

import asyncio
import csv
import difflib
import io
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Opd

# Column sizes of `opd.code` and `opd.name` (storage/models.py).
CODE_MAX_LENGTH = 32
NAME_MAX_LENGTH = 200
#: An OPD list is a few hundred lines (the shipped one is under 100 KB); a larger
#: file is refused before it is read into memory.
OPD_FILE_MAX_BYTES = 4 << 20

# difflib ratio below which two strings are not offered as "did you mean".
CLOSEST_CUTOFF = 0.6

_APOSTROPHES = re.compile(r"['’`]")
_NOT_ALNUM = re.compile(r"[^0-9a-z]+")
# Leading words that say what kind of body an OPD is; people often leave them out.
_KIND_WORDS = frozenset({"dinas", "badan", "biro"})
# Words left out of an acronym ("Dinas Pekerjaan Umum dan Penataan Ruang" -> "dpupr").
_ACRONYM_SKIP = frozenset({"dan"})


def normalize_opd_name(text: str) -> str:
    """Lower-case, accent- and punctuation-free, single-spaced form of an OPD name or query.

    "Rumah Sakit Umum Daerah Dr. M. Yunus" -> "rumah sakit umum daerah dr m yunus".
    Apostrophes vanish ("Jum'at" -> "jumat"); any other non-alphanumeric run
    becomes one space. Only ASCII letters and digits survive, which suits
    Indonesian names but would erase non-Latin scripts.
    """
    decomposed = unicodedata.normalize("NFKD", text)
    without_marks = "".join(char for char in decomposed if not unicodedata.combining(char))
    without_apostrophes = _APOSTROPHES.sub("", without_marks.casefold())
    return _NOT_ALNUM.sub(" ", without_apostrophes).strip()


@dataclass(frozen=True, slots=True)
class OpdLoadResult:
    """What one CSV load did, counted by OPD code."""

    inserted: int
    updated: int
    unchanged: int


class OpdFileError(ValueError):
    """The OPD file was rejected as a whole; nothing was written.

    `line` is the 1-based physical line at fault (the header is line 1), or None
    when the fault is the whole file.
    """

    def __init__(self, path: Path, reason: str, *, line: int | None = None) -> None:
        self.path = path
        self.reason = reason
        self.line = line
        where = f"{path.name}, line {line}" if line is not None else path.name
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True, slots=True)
class _OpdRow:
    line: int
    code: str
    name: str


class OpdRepository:
    """OPD rows through one `AsyncSession`; flushes but never commits."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def load_csv(self, path: Path, *, now: datetime) -> OpdLoadResult:
        """Upsert the OPDs of a `code,name` CSV file by code.

        New codes are inserted (active, created at `now`); a code whose name
        changed, or that had been deactivated, is updated and made active; the rest
        are counted unchanged. OPDs missing from the file are left as they are
        (ASN rows refer to them). The file is UTF-8, with or without a BOM,
        delimited by `,` or `;` (whichever the header uses); extra columns are
        ignored, codes are stored upper-case and names single-spaced.

        Raises `OpdFileError` naming the line when the header lacks `code` or
        `name`, a code or name is empty or too long, or a code is repeated.
        """
        if now.tzinfo is None:
            raise ValueError("now must be a timezone-aware datetime")
        rows = await asyncio.to_thread(_read_opd_file, path)
        existing = {opd.code: opd for opd in (await self._session.scalars(select(Opd))).all()}
        inserted = updated = unchanged = 0
        for row in rows:
            search_name = normalize_opd_name(row.name)
            opd = existing.get(row.code)
            if opd is None:
                self._session.add(
                    Opd(
                        code=row.code,
                        name=row.name,
                        search_name=search_name,
                        active=True,
                        created_at=now,
                    )
                )
                inserted += 1
            elif opd.name != row.name or opd.search_name != search_name or not opd.active:
                opd.name = row.name
                opd.search_name = search_name
                opd.active = True
                updated += 1
            else:
                unchanged += 1
        await self._session.flush()
        return OpdLoadResult(inserted=inserted, updated=updated, unchanged=unchanged)

    async def count(self) -> int:
        """Number of OPD rows, active or not (0 means the list was never loaded)."""
        return (await self._session.scalar(select(func.count(Opd.id)))) or 0

    async def get(self, opd_id: int) -> Opd | None:
        """The OPD with this id, active or not."""
        return await self._session.get(Opd, opd_id)

    async def get_by_code(self, code: str) -> Opd | None:
        """The OPD with this code (compared upper-case, as stored), active or not."""
        statement = select(Opd).where(Opd.code == code.strip().upper())
        return (await self._session.scalars(statement)).one_or_none()

    async def search(self, query: str, *, limit: int = 8) -> list[Opd]:
        """Active OPDs matching `query`, ignoring case, accents and punctuation.

        First the exact matches (the code, or the whole normalised name), then
        OPDs whose name or code contains every query word as a substring
        ("dinas kes" finds Dinas Kesehatan), each group ordered by name. An empty
        query matches nothing.
        """
        normalized = normalize_opd_name(query)
        if not normalized or limit < 1:
            return []
        code = query.strip().upper()
        # Normalised words are [a-z0-9] only, so they hold no LIKE wildcards.
        every_word = and_(
            *(
                or_(Opd.search_name.contains(word), func.lower(Opd.code).contains(word))
                for word in normalized.split()
            )
        )
        exact = or_(Opd.code == code, Opd.search_name == normalized)
        statement = select(Opd).where(Opd.active.is_(True), or_(exact, every_word))
        matches = (await self._session.scalars(statement)).all()

        def rank(opd: Opd) -> tuple[bool, str, int]:
            is_exact = opd.code == code or opd.search_name == normalized
            # Ordered on the normalised name so SQLite and PostgreSQL agree.
            return (not is_exact, opd.search_name, opd.id)

        return sorted(matches, key=rank)[:limit]

    async def closest(self, query: str, *, limit: int = 3) -> list[Opd]:
        """Active OPDs that look like `query`, best first, for "did you mean ...?".

        Each OPD is scored with difflib's ratio (0..1) against its normalised name,
        the name without a leading Dinas/Badan/Biro, the code without its
        province prefix ("BKL-DINKES" -> "dinkes") and the name's acronym without
        "dan" ("bpbd"); the best of these counts. OPDs scoring under
        `CLOSEST_CUTOFF` are left out. Typos and common abbreviations are found;
        synonyms and abbreviations that are neither the code nor the initials
        are not.
        """
        normalized = normalize_opd_name(query)
        if not normalized or limit < 1:
            return []
        compact = normalized.replace(" ", "")
        opds = (await self._session.scalars(select(Opd).where(Opd.active.is_(True)))).all()
        scored: list[tuple[float, Opd]] = []
        for opd in opds:
            score = max(
                max(_ratio(normalized, form) for form in _name_forms(opd.search_name)),
                max(_ratio(compact, form) for form in _short_forms(opd.code, opd.search_name)),
            )
            if score >= CLOSEST_CUTOFF:
                scored.append((score, opd))
        scored.sort(key=lambda item: (-item[0], item[1].search_name, item[1].id))
        return [opd for _score, opd in scored[:limit]]


def _ratio(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b).ratio() if a and b else 0.0


def _name_forms(search_name: str) -> tuple[str, ...]:
    first, _, rest = search_name.partition(" ")
    return (search_name, rest) if first in _KIND_WORDS and rest else (search_name,)


def _short_forms(code: str, search_name: str) -> tuple[str, ...]:
    code_words = normalize_opd_name(code).split()
    # "BKL-DINKES" -> "dinkes"; a code without a prefix is used whole.
    short_code = "".join(code_words[1:] if len(code_words) > 1 else code_words)
    acronym = "".join(word[0] for word in search_name.split() if word not in _ACRONYM_SKIP)
    return (short_code, acronym)


def _read_opd_file(path: Path) -> list[_OpdRow]:
    if path.stat().st_size > OPD_FILE_MAX_BYTES:
        raise OpdFileError(path, f"larger than {OPD_FILE_MAX_BYTES >> 20} MiB; not an OPD list")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise OpdFileError(path, f"not UTF-8 text (byte {error.start})") from error
    header_line = next((line for line in text.splitlines() if line.strip()), None)
    if header_line is None:
        raise OpdFileError(path, "the file is empty; expected a header 'code,name'")
    delimiter = ";" if header_line.count(";") > header_line.count(",") else ","

    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    code_at = name_at = -1
    first_line_of_code: dict[str, int] = {}
    rows: list[_OpdRow] = []
    try:
        for record in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in record):
                continue
            if code_at < 0:
                columns = [cell.strip().casefold() for cell in record]
                if "code" not in columns or "name" not in columns:
                    raise OpdFileError(
                        path,
                        f"the header must have the columns 'code' and 'name', found {record!r}",
                        line=line,
                    )
                code_at, name_at = columns.index("code"), columns.index("name")
                continue
            code = record[code_at].strip().upper() if code_at < len(record) else ""
            name = " ".join(record[name_at].split()) if name_at < len(record) else ""
            if not code:
                raise OpdFileError(path, "the code is empty", line=line)
            if len(code) > CODE_MAX_LENGTH:
                raise OpdFileError(
                    path, f"code {code!r} is longer than {CODE_MAX_LENGTH} characters", line=line
                )
            if not name:
                raise OpdFileError(path, f"the name of {code!r} is empty", line=line)
            if len(name) > NAME_MAX_LENGTH:
                raise OpdFileError(
                    path,
                    f"the name of {code!r} is longer than {NAME_MAX_LENGTH} characters",
                    line=line,
                )
            if code in first_line_of_code:
                raise OpdFileError(
                    path,
                    f"code {code!r} is repeated (first on line {first_line_of_code[code]})",
                    line=line,
                )
            first_line_of_code[code] = line
            rows.append(_OpdRow(line=line, code=code, name=name))
    except csv.Error as error:
        raise OpdFileError(path, f"not readable as CSV ({error})", line=reader.line_num) from error
    if not rows:
        raise OpdFileError(path, "the file has no OPD rows after the header")
    return rows
