"""The KPJ file read in a child process: limits hit there are a refusal here (issue 11)."""

from __future__ import annotations

import asyncio
import signal

import pytest

from storage.collective_file import FileBudget, FileProblem, KpjFileError, read_kpj_file
from storage.isolated_read import (
    MAX_CONCURRENT_READS,
    ReadLimits,
    _decode_answer,
    _failure,
    read_kpj_file_isolated,
    reading_slots,
)
from tests.fakes.hostile_files import far_cell_xlsx, zip_bomb_xlsx
from tests.storage.test_collective_file import KPJ_A, KPJ_B, NIK_A, xlsx

CSV = f"NIK;KPJ\n{NIK_A};{KPJ_A}\n\n3.20101E+15;{KPJ_B}\n".encode()


async def refused(name: str, content: bytes, **kwargs: object) -> KpjFileError:
    with pytest.raises(KpjFileError) as caught:
        await read_kpj_file_isolated(name, content, **kwargs)  # type: ignore[arg-type]
    return caught.value


@pytest.mark.parametrize(
    ("name", "content"),
    [("kpj.csv", CSV), ("kpj.xlsx", xlsx([["NIK", "KPJ"], [NIK_A, KPJ_A], [], ["x", "12-3"]]))],
    ids=["csv", "xlsx"],
)
async def test_the_child_reads_what_the_reader_reads(name: str, content: bytes) -> None:
    steps: list[int] = []
    assert await read_kpj_file_isolated(name, content, progress=steps.append) == read_kpj_file(
        name, content
    )
    assert steps == [2]


async def test_the_childs_refusals_arrive_as_they_are() -> None:
    error = await refused("kpj.csv", b"Nama,No KPJ\nSiti,1\n")
    assert (error.problem, error.detail) == (FileProblem.NO_NIK_COLUMN, "Nama, No KPJ")
    error = await refused("kpj.csv", CSV, budget=FileBudget(max_rows=1))
    assert error.problem is FileProblem.TOO_MANY_ROWS


async def test_the_crafted_files_of_issue_11_are_refused_and_the_caller_goes_on() -> None:
    assert (await refused("kpj.xlsx", far_cell_xlsx())).problem is FileProblem.TOO_LARGE
    assert (await refused("kpj.xlsx", zip_bomb_xlsx(200))).problem is FileProblem.TOO_LARGE
    rows, _ = await read_kpj_file_isolated("kpj.csv", CSV)
    assert [row.nik for row in rows] == [NIK_A, None]


async def test_a_file_over_the_byte_budget_starts_no_child() -> None:
    error = await refused("kpj.csv", CSV, budget=FileBudget(max_file_bytes=len(CSV) - 1))
    assert error.problem is FileProblem.TOO_LARGE


async def test_a_child_over_its_memory_limit_is_a_refusal() -> None:
    # An address space smaller than the child already uses: its next mapping fails,
    # at the latest when it takes the 2 MB file (glibc maps blocks this size).
    content = ("NIK,KPJ\n" + f"{NIK_A},{KPJ_A}\n" * 72_000).encode()
    error = await refused("kpj.csv", content, limits=ReadLimits(memory_bytes=1))
    assert error.problem is FileProblem.TOO_LARGE
    # The next file is read as usual.
    assert len((await read_kpj_file_isolated("kpj.csv", CSV))[0]) == 2


async def test_a_child_over_its_cpu_time_is_killed_and_the_file_refused() -> None:
    # A limit of 0 s: the kernel stops the child (SIGXCPU) at its next tick.
    error = await refused("kpj.csv", CSV, limits=ReadLimits(cpu_seconds=0))
    assert error.problem is FileProblem.TOO_SLOW


async def test_a_child_not_done_in_time_is_killed_and_the_file_refused() -> None:
    error = await refused("kpj.csv", CSV, limits=ReadLimits(wall_seconds=0.001))
    assert error.problem is FileProblem.TOO_SLOW


@pytest.mark.parametrize(
    ("status", "problem"),
    [
        (-signal.SIGABRT, FileProblem.TOO_LARGE),  # calamine's failed allocation
        (-signal.SIGXCPU, FileProblem.TOO_SLOW),
        (-signal.SIGKILL, FileProblem.TOO_SLOW),
        (-signal.SIGSEGV, FileProblem.UNREADABLE),
        (3, FileProblem.TOO_LARGE),  # MemoryError inside Python
        (1, FileProblem.UNREADABLE),
    ],
)
def test_how_a_child_ended_becomes_one_problem(status: int, problem: FileProblem) -> None:
    assert _failure(status).problem is problem


@pytest.mark.parametrize(
    "output",
    [
        b"",
        b"[]",
        b'{"problem": "no such problem"}',
        b'{"row_number": [2], "nik": [1], "nik_problem": [null], "nik_shown": [""], '
        b'"kpj_raw": [""], "empty": 0}',
        b'{"row_number": [2, 3], "nik": [null], "nik_problem": [null], "nik_shown": [""], '
        b'"kpj_raw": [""], "empty": 0}',
        b'{"row_number": [2], "nik": [null], "nik_problem": ["cursed"], "nik_shown": [""], '
        b'"kpj_raw": [""], "empty": 0}',
        b'{"row_number": [2], "nik": [null], "nik_problem": [[]], "nik_shown": [""], '
        b'"kpj_raw": [""], "empty": "0"}',
    ],
    ids=[
        "nothing",
        "not-an-object",
        "unknown-problem",
        "nik-not-text",
        "short-column",
        "unknown-nik-problem",
        "unhashable",
    ],
)
def test_an_answer_the_parent_cannot_trust_is_unreadable(output: bytes) -> None:
    with pytest.raises(KpjFileError) as caught:
        _decode_answer(output)
    assert caught.value.problem is FileProblem.UNREADABLE


async def test_no_more_children_than_the_slots_read_at_once() -> None:
    slots = reading_slots()
    for _ in range(MAX_CONCURRENT_READS):
        await slots.acquire()
    waiting = asyncio.create_task(read_kpj_file_isolated("kpj.csv", CSV))
    for _ in range(20):  # however long it waits, no slot: no child, no answer
        await asyncio.sleep(0)
    assert not waiting.done()
    slots.release()
    rows, _ = await waiting
    assert [row.nik for row in rows] == [NIK_A, None]
    for _ in range(MAX_CONCURRENT_READS - 1):
        slots.release()
