"""`sertakan export` and `sertakan import`: the collective file and the KPJ file from the CLI.

    sertakan export --opd CODE [--batch NUMBER] --out FILE.xlsx|FILE.csv
    sertakan import --opd CODE FILE [--yes]

The same work as the PIC's chat commands (PRODUCT 4.5), for large files and for
the administrator: `export` puts the OPD's accepted, not-yet-batched
enrollments into a batch (`storage.workbench.create_batch`) and writes its
collective file, or writes an existing batch's file again (the same bytes
while the batch is unchanged); `import` reads a NIK -> KPJ file, prints the
preview and, once confirmed, applies it. Progress bars (tqdm) go to stderr.
Every change, and every collective file written (it holds full NIKs), is
audited with the operating-system login of whoever runs it. Files are
created owner-only (0600).

`bot.cli` adds these with `add_parsers` and hands a parsed command to
`dispatch`. Messages are for the administrator, in English; the full NIK is
never printed (masked forms only), it is only in the exported file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TextIO

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.app import Runtime
from domain.local_time import local_moment
from storage import audit, workbench
from storage.audit import Actor
from storage.collective import ImportPreview, RejectReason, export_batch, preview_import
from storage.collective_file import FileProblem, KpjFileError, check_file_size
from storage.isolated_read import read_kpj_file_isolated
from storage.models import Opd
from storage.workbench import BatchInfo, NoticePlanner

if TYPE_CHECKING:
    from tqdm import tqdm

COMMANDS = frozenset({"export", "import"})
#: Rejected rows listed after the counts; the rest are only counted.
SHOWN_REJECTED = 20

REASON_TEXT: dict[RejectReason, str] = {
    RejectReason.MALFORMED_NIK: "NIK not 16 digits",
    RejectReason.NIK_AS_NUMBER: "NIK stored as a number (digits lost)",
    RejectReason.UNKNOWN_NIK: "unknown NIK",
    RejectReason.DUPLICATE_NIK: "NIK repeated in the file",
    RejectReason.MALFORMED_KPJ: "KPJ not 11 digits",
    RejectReason.DUPLICATE_KPJ: "KPJ given to another worker",
    RejectReason.OTHER_OPD: "enrolled through another OPD",
    RejectReason.NOT_SUBMITTED: "enrollment not yet accepted",
    RejectReason.KPJ_CONFLICT: "already has another KPJ",
}
FILE_PROBLEM_TEXT: dict[FileProblem, str] = {
    FileProblem.NOT_SPREADSHEET: "not a CSV or XLSX file",
    FileProblem.UNREADABLE: "the file is damaged or cannot be read",
    FileProblem.EMPTY: "the file has no data rows",
    FileProblem.NO_NIK_COLUMN: "no NIK column found in the first 20 rows",
    FileProblem.NO_KPJ_COLUMN: "a NIK column but no KPJ column",
    FileProblem.TOO_MANY_ROWS: "too many rows",
    FileProblem.TOO_LARGE: "file refused: too large",
    FileProblem.TOO_SLOW: "file refused: could not be read in time",
}


class _CommandError(Exception):
    """Ends the command with its message on stderr and exit status 1."""


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `export` and `import` to `sertakan`'s subcommands."""
    export = sub.add_parser(
        "export",
        help="write an OPD's collective file (XLSX) for BPJS",
        description="Without --batch: put the OPD's accepted enrollments that are in no batch "
        "yet into a batch and write its file. With --batch: write that batch's file again.",
    )
    export.add_argument("--opd", required=True, metavar="CODE", help="the OPD's code")
    export.add_argument("--batch", metavar="NUMBER", help="an existing batch, e.g. DINKES-2026-001")
    export.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="FILE.xlsx",
        help="output file (FILE.csv: the same columns as CSV)",
    )

    kpj = sub.add_parser(
        "import",
        help="apply a NIK -> KPJ file from BPJS (CSV or XLSX) after a preview",
        description="Read the file, print what it would change and which rows are rejected, "
        "then ask before writing the KPJ numbers.",
    )
    kpj.add_argument("--opd", required=True, metavar="CODE", help="the OPD's code")
    kpj.add_argument("file", type=Path, metavar="FILE", help="the CSV or XLSX file")
    kpj.add_argument("--yes", action="store_true", help="apply without asking")


async def dispatch(args: argparse.Namespace, runtime: Runtime) -> int | None:
    """Run `export` or `import`; None when `args.command` is neither."""
    command = getattr(args, "command", None)
    if command not in COMMANDS:
        return None
    try:
        if command == "export":
            return await _export(args, runtime)
        return await _import(args, runtime)
    except _CommandError as error:
        print(f"sertakan: {error}", file=sys.stderr)
        return 1


def _admin() -> Actor:
    try:
        return Actor.admin(getpass.getuser())
    except (OSError, KeyError):  # no login name in a bare container
        return Actor.admin("unknown")


async def _opd(connection: AsyncConnection, code: str) -> tuple[int, str]:
    row = (
        await connection.execute(select(Opd.id, Opd.name).where(Opd.code == code.strip().upper()))
    ).first()
    if row is None:
        raise _CommandError(f"there is no OPD with the code {code.strip().upper()!r}")
    return int(row.id), str(row.name)


# -- export ----------------------------------------------------------------------------


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[BinaryIO]:
    """A temporary file beside `path` that replaces it only if the block succeeds."""
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as error:
        raise _CommandError(f"cannot write {path}: {error.strerror}") from error
    try:
        with os.fdopen(fd, "wb") as file:
            yield file
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


async def _export(args: argparse.Namespace, runtime: Runtime) -> int:
    out: Path = args.out
    if await asyncio.to_thread(out.is_dir):
        raise _CommandError(f"{out} is a directory; give a file name such as {out / 'batch.xlsx'}")
    with _replacing(out) as target:
        async with runtime.db.begin() as connection:
            opd_id, opd_name = await _opd(connection, args.opd)
            if args.batch is not None:
                batch = await workbench.batch_by_number(
                    connection, opd_id=opd_id, number=args.batch
                )
                if batch is None:
                    raise _CommandError(f"{args.opd.upper()} has no batch {args.batch!r}")
            else:
                created = await workbench.create_batch(
                    connection,
                    opd_id=opd_id,
                    actor=_admin(),
                    now=runtime.clock(),
                    zone=runtime.timezone,
                )
                if created is None:
                    raise _CommandError(
                        f"{args.opd.upper()} has no accepted enrollments waiting for a batch; "
                        "nothing written"
                    )
                batch = created
        try:
            # FILE.csv: the CSV form (formula-looking text escaped); anything else is XLSX.
            as_csv = out.suffix.casefold() == ".csv"
            written = await _write(runtime, batch, opd_name, target, as_csv=as_csv)
        except OSError as error:
            raise _CommandError(
                f"cannot write {out}: {error.strerror}; batch {batch.number} stays as it is, "
                f"write its file with --batch {batch.number}"
            ) from error
        # Before the file takes its name: no full-NIK file without its audit entry.
        async with runtime.db.begin() as connection:
            await audit.nik_file_released(
                connection,
                _admin(),
                batch_id=batch.id,
                batch_number=batch.number,
                opd_id=opd_id,
                rows=written,
                channel=audit.CLI_CHANNEL,
                now=runtime.clock(),
            )
    print(f"batch {batch.number} ({batch.status.value}): {written} rows written to {out}")
    if written != batch.row_count:
        print(
            f"note: the batch lists {batch.row_count} rows; it changed while the file was written",
            file=sys.stderr,
        )
    return 0


def _bar(**options: Any) -> tqdm[Any]:
    """A progress bar on stderr. tqdm (0.8 MB) is imported here, not where `sertakan run`
    loads the CLI's commands."""
    from tqdm import tqdm

    return tqdm(file=sys.stderr, **options)


async def _write(
    runtime: Runtime, batch: BatchInfo, opd_name: str, target: BinaryIO, *, as_csv: bool
) -> int:
    # The sheet shows the batch date in the province's zone, as the chat's file does;
    # the same batch gives the same bytes.
    created_at = local_moment(batch.created_at, runtime.timezone)
    with _bar(total=batch.row_count, desc="writing", unit=" rows") as bar:
        return await export_batch(
            runtime.db,
            runtime.cipher,
            target,
            batch_id=batch.id,
            batch_number=batch.number,
            opd_name=opd_name,
            created_at=created_at,
            progress=bar.update,
            columns=runtime.engine.config.collective_columns,
            as_csv=as_csv,
        )


# -- import ----------------------------------------------------------------------------


class _CountingNotices:
    """The real notice planner, counting the enrollments it is told became active."""

    def __init__(self, inner: NoticePlanner, bar: tqdm[Any]) -> None:
        self._inner = inner
        self._bar = bar

    async def enrollment_accepted(
        self, connection: AsyncConnection, sponsorship_id: int, *, now: datetime
    ) -> None:
        await self._inner.enrollment_accepted(connection, sponsorship_id, now=now)

    async def enrollment_returned(
        self, connection: AsyncConnection, sponsorship_id: int, *, now: datetime
    ) -> None:
        await self._inner.enrollment_returned(connection, sponsorship_id, now=now)

    async def cards_ready(
        self, connection: AsyncConnection, sponsorship_ids: Sequence[int], *, now: datetime
    ) -> None:
        await self._inner.cards_ready(connection, sponsorship_ids, now=now)
        self._bar.update(len(sponsorship_ids))


async def _import(args: argparse.Namespace, runtime: Runtime) -> int:
    path: Path = args.file
    try:
        # A file over the budget is refused before it is read into memory.
        check_file_size((await asyncio.to_thread(path.stat)).st_size)
        content = await asyncio.to_thread(path.read_bytes)
    except OSError as error:
        raise _CommandError(f"cannot read {path}: {error.strerror}") from error
    except KpjFileError as error:
        detail = f"{path.name}: {FILE_PROBLEM_TEXT[error.problem]} ({error.detail})"
        raise _CommandError(detail) from error
    try:
        with _bar(desc="reading", unit=" rows") as bar:
            rows, empty = await read_kpj_file_isolated(path.name, content, progress=bar.update)
    except KpjFileError as error:
        detail = f" ({error.detail})" if error.detail else ""
        raise _CommandError(f"{path.name}: {FILE_PROBLEM_TEXT[error.problem]}{detail}") from error

    async with runtime.db.begin() as connection:
        opd_id, _ = await _opd(connection, args.opd)
    # Its own transaction: on SQLite a transaction holds the write lock.
    async with runtime.db.begin() as connection:
        total = len(rows)
        with _bar(total=total, desc="previewing", unit=" rows") as bar:
            preview = await preview_import(
                connection,
                runtime.cipher,
                opd_id=opd_id,
                rows=rows,
                empty_rows=empty,
                progress=bar.update,
            )
            bar.update(total - bar.n)  # rows refused before any lookup
    print_preview(path.name, preview, sys.stdout)

    if not preview.matched:
        print("nothing to apply")
        return 0
    if not args.yes and not _confirm(f"apply {len(preview.matched)} KPJ numbers? [y/N] "):
        print("nothing written")
        return 0
    actor = _admin()
    async with runtime.db.begin() as connection:
        now = runtime.clock()
        import_id = await workbench.stage_import(
            connection, opd_id=opd_id, preview=preview, file_name=path.name, actor=actor, now=now
        )
        with _bar(total=len(preview.matched), desc="writing", unit=" rows") as bar:
            activated = await workbench.apply_import(
                connection,
                _CountingNotices(runtime.engine.notices, bar),
                opd_id=opd_id,
                import_id=import_id,
                actor=actor,
                now=now,
            )
    print(f"{activated} KPJ numbers written; the sponsors are notified (import {import_id})")
    if activated < len(preview.matched):
        print(
            f"{len(preview.matched) - activated} enrollments changed since the preview "
            "and were left alone"
        )
    return 0


def _confirm(question: str) -> bool:
    try:
        answer = input(question)
    except EOFError:  # no terminal: never a yes
        return False
    return answer.strip().casefold() in {"y", "yes", "ya"}


def print_preview(file_name: str, preview: ImportPreview, out: TextIO) -> None:
    """The preview as the administrator reads it: totals, counts per reason, first rejected rows."""
    empty = f" ({preview.empty_rows} empty rows skipped)" if preview.empty_rows else ""
    lines = [
        f"{file_name}: {preview.total_rows} rows{empty}",
        f"  KPJ numbers to write: {len(preview.matched)}",
        f"  already recorded:     {preview.unchanged}",
        f"  rejected:             {len(preview.rejected)}",
    ]
    for reason, count in preview.counts().items():
        lines.append(f"    {REASON_TEXT[reason]}: {count}")
    if preview.rejected:
        shown = preview.rejected[:SHOWN_REJECTED]
        more = len(preview.rejected) - len(shown)
        lines.append(
            "rejected rows" + (f" (first {len(shown)}, {more} more)" if more else "") + ":"
        )
        width = max(len(str(row.row_number)) for row in shown)
        nik_width = max(len(row.nik_shown) for row in shown)
        for row in shown:
            lines.append(
                f"  row {row.row_number:>{width}}  {row.nik_shown or '-':<{nik_width}}  "
                f"{REASON_TEXT[row.reason]}"
            )
    print("\n".join(lines), file=out)
