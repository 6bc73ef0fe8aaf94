"""Reading an untrusted KPJ file in a child process with memory and time limits.

A crafted spreadsheet can make a parser allocate without bound (calamine asked
for 524 GB for one cell at XFD999990 and aborted the process) or spin for a
long time. `read_kpj_file_isolated` runs `storage.collective_file.read_kpj_file`
(its budget checks first) in a fresh interpreter (`python -m
storage.isolated_read`) whose address space and CPU time are capped with
`resource.setrlimit`, and waits for it with a wall-clock timeout without
blocking the event loop. Whatever happens in the child (a refusal, a memory
limit, a crash, a hang) becomes a `KpjFileError`; the caller's process only
ever receives plain rows.

Protocol: the parent writes one JSON line (file name, budget, limits) and then
the file's bytes to the child's stdin; the child answers on stdout with JSON:
one list per `KpjRow` field (`{"row_number": [...], "nik": [...], ...,
"empty": n}`) or
`{"problem": ..., "detail": ...}`. Nothing the child prints is logged (cells
hold NIKs); its stderr is discarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import resource
import signal
import sys
import weakref
from collections.abc import Callable
from typing import Any

from storage.collective_file import (
    DEFAULT_BUDGET,
    FileBudget,
    FileProblem,
    KpjFileError,
    KpjRow,
    NikCellProblem,
    check_file_size,
    read_kpj_file,
)

log = logging.getLogger(__name__)

#: The answer's columns, in `KpjRow` order.
_COLUMNS = ("row_number", "nik", "nik_problem", "nik_shown", "kpj_raw")
_NIK_PROBLEMS: dict[str | None, NikCellProblem | None] = {
    None: None,
    **{problem.value: problem for problem in NikCellProblem},
}
#: Exit status of a child that ran out of memory inside Python (MemoryError).
_OUT_OF_MEMORY = 3
#: How the parent reads a child killed by a signal.
_SIGNAL_PROBLEMS = {
    signal.SIGXCPU: (FileProblem.TOO_SLOW, "over the CPU time limit"),
    signal.SIGKILL: (FileProblem.TOO_SLOW, "stopped"),
    # Rust (calamine) aborts when an allocation fails.
    signal.SIGABRT: (FileProblem.TOO_LARGE, "over the memory limit"),
}


@dataclasses.dataclass(frozen=True, slots=True)
class ReadLimits:
    """What the child reading one file may use; over any of them the file is refused.

    A 144,000-row KPJ file is read in about 2 s of CPU within 300 MB of
    address space; the defaults leave room for the largest file `FileBudget`
    allows.
    """

    #: RLIMIT_AS of the child (address space, bytes).
    memory_bytes: int = 2 << 30
    #: RLIMIT_CPU of the child (seconds of CPU).
    cpu_seconds: int = 30
    #: The parent stops waiting and kills the child after this many seconds.
    wall_seconds: float = 60.0


DEFAULT_LIMITS = ReadLimits()
#: Children reading at once in one process (each may use `memory_bytes`); more wait.
MAX_CONCURRENT_READS = 2
_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def reading_slots() -> asyncio.Semaphore:
    """The running loop's semaphore of `MAX_CONCURRENT_READS` children."""
    loop = asyncio.get_running_loop()
    slots = _slots.get(loop)
    if slots is None:
        slots = _slots[loop] = asyncio.Semaphore(MAX_CONCURRENT_READS)
    return slots


async def read_kpj_file_isolated(
    file_name: str,
    content: bytes,
    *,
    budget: FileBudget = DEFAULT_BUDGET,
    limits: ReadLimits = DEFAULT_LIMITS,
    progress: Callable[[int], object] | None = None,
) -> tuple[list[KpjRow], int]:
    """`read_kpj_file` in a child process under `limits`: (data rows, empty rows).

    Raises KpjFileError for any file that cannot be used: the child's own
    refusals as they are, a memory limit or a crash as TOO_LARGE or
    UNREADABLE, a CPU or wall-clock limit as TOO_SLOW. `progress`, if given,
    is called once with the number of rows read. Files over
    `budget.max_file_bytes` are refused before a child is started.
    """
    check_file_size(len(content), budget)
    header = json.dumps(
        {
            "file_name": file_name,
            "budget": dataclasses.asdict(budget),
            "limits": dataclasses.asdict(limits),
        }
    ).encode()
    async with reading_slots():
        output, status = await _run_child(header + b"\n" + content, limits)
    if status != 0:
        log.warning("KPJ file reader ended with status %s", status)
        raise _failure(status)
    rows, empty = _decode_answer(output)
    if progress is not None:
        progress(len(rows))
    return rows, empty


async def _run_child(request: bytes, limits: ReadLimits) -> tuple[bytes, int | None]:
    """(the child's stdout, its exit status) for `request`; KpjFileError TOO_SLOW on the timeout."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        __name__,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(limits.wall_seconds):
            output, _ = await child.communicate(request)
    except TimeoutError:
        log.warning("KPJ file reader stopped after %s s", limits.wall_seconds)
        raise KpjFileError(
            FileProblem.TOO_SLOW, f"not read within {limits.wall_seconds:g} s"
        ) from None
    except (BrokenPipeError, ConnectionResetError):
        # The child died before taking the whole file; its status says why.
        await child.wait()
        output = b""
    finally:
        if child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await child.wait()
    return output, child.returncode


def _failure(status: int | None) -> KpjFileError:
    if status == _OUT_OF_MEMORY:
        return KpjFileError(FileProblem.TOO_LARGE, "over the memory limit")
    if status is not None and status < 0:
        with contextlib.suppress(ValueError):
            problem, detail = _SIGNAL_PROBLEMS.get(
                signal.Signals(-status), (FileProblem.UNREADABLE, "the reader crashed")
            )
            return KpjFileError(problem, detail)
    return KpjFileError(FileProblem.UNREADABLE, "the reader crashed")


def _decode_answer(output: bytes) -> tuple[list[KpjRow], int]:
    """The child's JSON answer, checked column by column (the child parsed hostile input)."""
    try:
        answer = json.loads(output)
        if "problem" in answer:
            raise KpjFileError(FileProblem(answer["problem"]), str(answer.get("detail", "")))
        numbers, niks, problems, shown, kpjs = (answer[column] for column in _COLUMNS)
        if not (
            set(map(type, numbers)) <= {int}
            and set(map(type, niks)) <= {str, type(None)}
            and set(map(type, shown)) <= {str}
            and set(map(type, kpjs)) <= {str}
            and len(numbers) == len(niks) == len(problems) == len(shown) == len(kpjs)
        ):
            raise TypeError("a column of the wrong type or length")
        problems = list(map(_NIK_PROBLEMS.__getitem__, problems))
        rows = list(map(KpjRow, numbers, niks, problems, shown, kpjs))
        empty = answer["empty"]
        if type(empty) is not int:
            raise TypeError("empty")
    except (ValueError, TypeError, KeyError) as exc:
        raise KpjFileError(FileProblem.UNREADABLE, "the reader gave no answer") from exc
    return rows, empty


# --- the child ---------------------------------------------------------------------------


def _child() -> int:
    """Read the request from stdin, apply the limits, answer on stdout."""
    request = json.loads(sys.stdin.buffer.readline())
    limits = ReadLimits(**request["limits"])
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
    try:
        content = sys.stdin.buffer.read()
        try:
            rows, empty = read_kpj_file(
                request["file_name"], content, budget=FileBudget(**request["budget"])
            )
        except KpjFileError as error:
            answer: dict[str, Any] = {"problem": error.problem.value, "detail": error.detail}
        else:
            del content
            # Column by column: a list per row took as long to decode as the read.
            answer = {
                "row_number": [row.row_number for row in rows],
                "nik": [row.nik for row in rows],
                "nik_problem": [row.nik_problem and row.nik_problem.value for row in rows],
                "nik_shown": [row.nik_shown for row in rows],
                "kpj_raw": [row.kpj_raw for row in rows],
                "empty": empty,
            }
        sys.stdout.buffer.write(json.dumps(answer, separators=(",", ":")).encode())
        sys.stdout.buffer.flush()
    except MemoryError:
        return _OUT_OF_MEMORY
    return 0


if __name__ == "__main__":
    sys.exit(_child())
