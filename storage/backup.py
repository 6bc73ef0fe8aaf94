"""Backups of the database (issue 14), never of the NIK key: that is kept apart.

- SQLite: SQLite's online backup API copies the database page by page into a
  new file while the bot keeps running (a consistent snapshot, WAL included).
- PostgreSQL: `pg_dump --format=custom` (Debian's postgresql-client), its
  password passed in the environment, never on the command line.

Restoring is done with the bot stopped: the SQLite file copied into place, or
`pg_restore` into an emptied database (docs/DEPLOY.md "Backups and restore").
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

from sqlalchemy.engine import make_url

from storage.db import is_sqlite


class BackupError(Exception):
    """The backup could not be made (the reason is in the message)."""


def backup(url: str, destination: Path) -> None:
    """Write a backup of the database at `url` to `destination` (0600, never overwriting)."""
    if destination.exists():
        raise BackupError(f"{destination} exists already: choose a new file name")
    destination.parent.mkdir(parents=True, exist_ok=True)
    if is_sqlite(url):
        database = make_url(url).database
        if not database or database == ":memory:":
            raise BackupError("an in-memory SQLite database cannot be backed up")
        sqlite_backup(Path(database), destination)
    else:
        pg_dump(url, destination)


def sqlite_backup(database: Path, destination: Path) -> None:
    """Copy `database` with SQLite's online backup API into a new file `destination`."""
    if not database.exists():
        raise BackupError(f"the SQLite database {database} does not exist")
    fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    try:
        source = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
        try:
            target = sqlite3.connect(destination)
            try:
                source.backup(target)
            finally:
                target.close()
        finally:
            source.close()
    except BaseException:
        destination.unlink(missing_ok=True)
        raise


def libpq_target(url: str) -> tuple[str, dict[str, str]]:
    """A libpq connection URL for `url` without its password, and the environment with it."""
    parsed = make_url(url)
    env = {}
    if parsed.password is not None:
        env["PGPASSWORD"] = str(parsed.password)
    plain = parsed.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def pg_dump(url: str, destination: Path) -> None:
    """`pg_dump --format=custom` of `url` into `destination` (0600)."""
    executable = shutil.which("pg_dump")
    if executable is None:
        raise BackupError(
            "pg_dump is not on PATH: install the PostgreSQL client "
            "(Debian: apt-get install postgresql-client)"
        )
    target, password = libpq_target(url)
    fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    completed = subprocess.run(
        [executable, "--format=custom", "--no-owner", f"--file={destination}", target],
        env={**os.environ, **password},
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        destination.unlink(missing_ok=True)
        raise BackupError(f"pg_dump failed: {completed.stderr.strip()}")
