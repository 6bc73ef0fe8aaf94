"""Loading, searching and suggesting OPDs against the real test database."""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import sertakan_data
from sertakan_data import shipped
from storage.opd_repository import (
    OPD_FILE_MAX_BYTES,
    OpdFileError,
    OpdLoadResult,
    OpdRepository,
    normalize_opd_name,
)

SHIPPED_CSV = shipped(sertakan_data.OPD_SEED)
NOW = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
LATER = datetime(2026, 4, 1, 8, 0, tzinfo=UTC)


def _shipped_rows() -> list[dict[str, str]]:
    with SHIPPED_CSV.open(encoding="utf-8", newline="") as file:
        return list(csv.DictReader(file))


def _write(tmp_path: Path, text: str, *, encoding: str = "utf-8") -> Path:
    path = tmp_path / "opd.csv"
    path.write_bytes(text.encode(encoding))
    return path


async def _load(
    sessionmaker: async_sessionmaker[AsyncSession], path: Path, now: datetime = NOW
) -> OpdLoadResult:
    async with sessionmaker() as session:
        result = await OpdRepository(session).load_csv(path, now=now)
        await session.commit()
    return result


@pytest.fixture
async def loaded(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session on a database holding the shipped Bengkulu OPD list."""
    await _load(sessionmaker, SHIPPED_CSV)
    async with sessionmaker() as session:
        yield session


# --- the shipped file ---------------------------------------------------------


def test_shipped_file_has_unique_prefixed_codes_and_names() -> None:
    rows = _shipped_rows()
    codes = [row["code"] for row in rows]
    names = [row["name"] for row in rows]
    assert 35 <= len(rows) <= 45
    assert len(set(codes)) == len(codes)
    assert len(set(names)) == len(names)
    assert all(code.startswith("BKL-") and code == code.upper() for code in codes)
    assert all(name == " ".join(name.split()) and name[0].isupper() for name in names)


# --- loading ------------------------------------------------------------------


async def test_loading_the_shipped_file_inserts_every_opd(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    result = await _load(sessionmaker, SHIPPED_CSV)

    expected = len(_shipped_rows())
    assert result == OpdLoadResult(inserted=expected, updated=0, unchanged=0)
    async with sessionmaker() as session:
        repository = OpdRepository(session)
        assert await repository.count() == expected
        dinkes = await repository.get_by_code("BKL-DINKES")
        assert dinkes is not None
        assert dinkes.name == "Dinas Kesehatan"
        assert dinkes.search_name == "dinas kesehatan"
        assert dinkes.active is True
        assert dinkes.created_at == NOW
        assert await repository.get(dinkes.id) == dinkes


async def test_reloading_the_same_file_changes_nothing(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    await _load(sessionmaker, SHIPPED_CSV)

    result = await _load(sessionmaker, SHIPPED_CSV, now=LATER)

    assert result == OpdLoadResult(inserted=0, updated=0, unchanged=len(_shipped_rows()))


async def test_a_changed_name_is_updated_and_a_new_code_inserted(
    sessionmaker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    await _load(sessionmaker, _write(tmp_path, "code,name\nBKL-A,Dinas Lama\nBKL-B,Badan Tetap\n"))

    result = await _load(
        sessionmaker,
        _write(tmp_path, "code,name\nBKL-A,Dinas Baru\nBKL-B,Badan Tetap\nBKL-C,Biro Tambahan\n"),
        now=LATER,
    )

    assert result == OpdLoadResult(inserted=1, updated=1, unchanged=1)
    async with sessionmaker() as session:
        repository = OpdRepository(session)
        renamed = await repository.get_by_code("BKL-A")
        assert renamed is not None
        assert (renamed.name, renamed.search_name, renamed.created_at) == (
            "Dinas Baru",
            "dinas baru",
            NOW,
        )
        added = await repository.get_by_code("BKL-C")
        assert added is not None
        assert added.created_at == LATER
        assert await repository.count() == 3


async def test_an_opd_missing_from_a_later_file_is_kept(
    sessionmaker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    await _load(sessionmaker, _write(tmp_path, "code,name\nBKL-A,Dinas A\nBKL-B,Dinas B\n"))

    result = await _load(sessionmaker, _write(tmp_path, "code,name\nBKL-A,Dinas A\n"))

    assert result == OpdLoadResult(inserted=0, updated=0, unchanged=1)
    async with sessionmaker() as session:
        assert await OpdRepository(session).count() == 2


async def test_semicolons_a_bom_extra_columns_and_untidy_cells_are_accepted(
    sessionmaker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    text = (
        "\ufeffNo;Code;Name\r\n"
        "1;bkl-dinkes; Dinas   Kesehatan \r\n"
        "\r\n"
        "2;BKL-DP3AP2KB;Dinas Pemberdayaan Perempuan, Perlindungan Anak\r\n"
    )

    result = await _load(sessionmaker, _write(tmp_path, text))

    assert result == OpdLoadResult(inserted=2, updated=0, unchanged=0)
    async with sessionmaker() as session:
        repository = OpdRepository(session)
        dinkes = await repository.get_by_code("BKL-DINKES")
        assert dinkes is not None
        assert dinkes.name == "Dinas Kesehatan"
        dp3a = await repository.get_by_code("bkl-dp3ap2kb")
        assert dp3a is not None
        assert dp3a.name == "Dinas Pemberdayaan Perempuan, Perlindungan Anak"


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("kode,nama\nBKL-A,Dinas A\n", 1, "the header must have the columns 'code' and 'name'"),
        (
            "code,name\nBKL-A,Dinas A\nBKL-B,Dinas B\nbkl-a,Dinas Lain\n",
            4,
            "code 'BKL-A' is repeated (first on line 2)",
        ),
        ("code,name\nBKL-A,Dinas A\nBKL-B,  \n", 3, "the name of 'BKL-B' is empty"),
        ("code,name\nBKL-A,Dinas A\nBKL-B\n", 3, "the name of 'BKL-B' is empty"),
        ("code,name\n,Dinas A\n", 2, "the code is empty"),
        (f"code,name\n{'X' * 33},Dinas A\n", 2, "is longer than 32 characters"),
        ("code,name\n", None, "no OPD rows after the header"),
        ("", None, "the file is empty"),
    ],
)
async def test_a_bad_file_is_rejected_with_its_line_and_nothing_is_written(
    sessionmaker: async_sessionmaker[AsyncSession],
    tmp_path: Path,
    text: str,
    line: int | None,
    reason: str,
) -> None:
    path = _write(tmp_path, text)

    with pytest.raises(OpdFileError) as caught:
        await _load(sessionmaker, path)

    assert caught.value.line == line
    assert reason in caught.value.reason
    assert str(caught.value).startswith("opd.csv, line " if line else "opd.csv: ")
    async with sessionmaker() as session:
        assert await OpdRepository(session).count() == 0


async def test_a_file_that_is_not_utf8_is_rejected(
    sessionmaker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    path = _write(tmp_path, "code,name\nBKL-A,Dinas Pariwisata dan Budaya Ñ\n", encoding="cp1252")

    with pytest.raises(OpdFileError, match="not UTF-8"):
        await _load(sessionmaker, path)


async def test_a_naive_load_time_is_refused(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    async with sessionmaker() as session:
        with pytest.raises(ValueError, match="timezone-aware"):
            await OpdRepository(session).load_csv(SHIPPED_CSV, now=datetime(2026, 3, 1))


# --- normalising, searching, suggesting -----------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Rumah Sakit Umum Daerah Dr. M. Yunus", "rumah sakit umum daerah dr m yunus"),
        ("  DINAS   Kesehatan  ", "dinas kesehatan"),
        ("Koperasi, Usaha Kecil & Menengah", "koperasi usaha kecil menengah"),
        ("Jum'at Bérsih", "jumat bersih"),
        ("...", ""),
    ],
)
def test_normalize_opd_name(text: str, expected: str) -> None:
    assert normalize_opd_name(text) == expected


async def test_search_by_a_word_lists_matches_by_name(loaded: AsyncSession) -> None:
    names = [opd.name for opd in await OpdRepository(loaded).search("kesehatan")]
    assert names == ["Dinas Kesehatan"]

    names = [opd.name for opd in await OpdRepository(loaded).search("PERUMAHAN")]
    assert names == ["Dinas Perumahan dan Kawasan Permukiman"]


async def test_search_needs_every_word_and_ignores_case_and_punctuation(
    loaded: AsyncSession,
) -> None:
    repository = OpdRepository(loaded)

    assert [opd.code for opd in await repository.search("rsud dr. m. yunus")] == []
    assert [opd.code for opd in await repository.search("Dr M YUNUS")] == ["BKL-RSMY"]
    assert [opd.code for opd in await repository.search("dinas kes")] == ["BKL-DINKES"]


async def test_search_puts_an_exact_match_first_and_honours_the_limit(
    loaded: AsyncSession,
) -> None:
    repository = OpdRepository(loaded)

    biro = await repository.search("biro", limit=20)
    assert [opd.name for opd in biro] == sorted(opd.name for opd in biro)
    assert len(biro) == 8

    found = await repository.search("biro umum")
    assert [opd.code for opd in found] == ["BKL-BIROUMUM"]

    assert len(await repository.search("dinas", limit=5)) == 5


async def test_search_puts_exact_name_and_code_matches_before_containing_ones(
    sessionmaker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    text = (
        "code,name\n"
        "BKL-A,Dinas Pemberdayaan Sosial\n"
        "BKL-B,Dinas Sosial\n"
        "BKL-C,Badan Sosial Dinas\n"
        "SOSIAL,Dinas Sosial Lain\n"
    )
    await _load(sessionmaker, _write(tmp_path, text))
    async with sessionmaker() as session:
        repository = OpdRepository(session)

        by_name = await repository.search("Dinas Sosial")
        by_code = await repository.search("sosial")

    assert [opd.code for opd in by_name] == ["BKL-B", "BKL-C", "BKL-A", "SOSIAL"]
    assert [opd.code for opd in by_code] == ["SOSIAL", "BKL-C", "BKL-A", "BKL-B"]


async def test_search_finds_a_code_fragment(loaded: AsyncSession) -> None:
    assert [opd.code for opd in await OpdRepository(loaded).search("dukcapil")] == ["BKL-DUKCAPIL"]


async def test_search_of_nothing_finds_nothing(loaded: AsyncSession) -> None:
    assert await OpdRepository(loaded).search("  ..  ") == []
    assert await OpdRepository(loaded).closest("") == []


async def test_search_and_closest_skip_inactive_opds(loaded: AsyncSession) -> None:
    repository = OpdRepository(loaded)
    dinkes = await repository.get_by_code("BKL-DINKES")
    assert dinkes is not None
    dinkes.active = False
    await loaded.flush()

    assert await repository.search("kesehatan") == []
    assert "BKL-DINKES" not in [opd.code for opd in await repository.closest("dinkes")]
    assert await repository.get(dinkes.id) is dinkes


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("dinas kesehtan", "BKL-DINKES"),
        ("kesehatan", "BKL-DINKES"),
        ("dinkes", "BKL-DINKES"),
        ("Dinkes Prov", "BKL-DINKES"),
        ("bpbd", "BKL-BPBD"),
        ("badan penanggulangan bencana", "BKL-BPBD"),
        ("dinas pariwisat", "BKL-DISPAR"),
        ("RSUD M Yunus", "BKL-RSMY"),
        ("disnaker", "BKL-DISNAKERTRANS"),
    ],
)
async def test_closest_suggests_the_intended_opd(
    loaded: AsyncSession, query: str, code: str
) -> None:
    suggestions = await OpdRepository(loaded).closest(query)
    assert 1 <= len(suggestions) <= 3
    assert code in [opd.code for opd in suggestions]


async def test_closest_puts_the_best_match_first(loaded: AsyncSession) -> None:
    [best, *_] = await OpdRepository(loaded).closest("dinas kesehtan")
    assert best.name == "Dinas Kesehatan"


async def test_closest_offers_nothing_for_an_unrelated_text(loaded: AsyncSession) -> None:
    assert await OpdRepository(loaded).closest("xyzzy qwerty") == []


async def test_a_file_larger_than_an_opd_list_is_refused_unread(
    sessionmaker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    path = _write(tmp_path, "code,name\nBKL-A,Dinas Pariwisata\n")
    with path.open("r+b") as file:  # sparse: never read
        file.truncate(OPD_FILE_MAX_BYTES + 1)

    with pytest.raises(OpdFileError, match="larger than 4 MiB"):
        await _load(sessionmaker, path)
