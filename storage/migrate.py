"""Run the packaged Alembic migrations from code (the CLI and the tests use this).

The migrations live in `storage/migrations`, shipped inside the package, so this
works from an installed wheel without an alembic.ini.

Alembic (with Mako and Pygments, about 13 MB) is imported only where a
migration runs: the bot migrates at start in a child process
(`upgrade_in_child`, `python -m storage.migrate`), and knows the head revision
it needs as a constant (`HEAD_REVISION`, checked against the scripts by
tests/storage/test_migrations.py), so a running bot never holds it in memory.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from storage.db import create_engine

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
#: The newest revision shipped with this package (a test checks it against the scripts).
HEAD_REVISION: Final = "0018_opd_status_index"
#: The child started by `upgrade_in_child` reads the database URL from here (not argv:
#: a password in the URL would show in the process list).
_URL_VARIABLE: Final = "SERTAKAN_MIGRATE_DATABASE_URL"


class MigrationFailed(RuntimeError):
    """The migration child process failed (its own output says why)."""


def alembic_config(database_url: str) -> Config:
    """An Alembic `Config` pointing at the packaged migrations and at `database_url`."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Silences Alembic's legacy-separator warning; we have a single versions folder.
    config.set_main_option("path_separator", "os")
    # ConfigParser interpolates "%", which URL-encoded passwords contain.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["database_url"] = database_url
    return config


def head_revision() -> str:
    """The newest revision shipped with this package."""
    return HEAD_REVISION


def scripts_head() -> str | None:
    """The head revision as the migration scripts say (reads them with Alembic)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


async def upgrade_to_head(database_url: str) -> None:
    """Apply every pending migration; a database already at head is left untouched.

    Alembic's command API is synchronous and our env.py runs its own event loop,
    so the command runs in a worker thread: safe to await from a running loop.
    Does not guard against two processes migrating at once; run it from one place.
    """
    from alembic import command

    await asyncio.to_thread(command.upgrade, alembic_config(database_url), "head")


async def upgrade_in_child(database_url: str) -> None:
    """`upgrade_to_head` in a child process, unless the database is at head already.

    Keeps Alembic out of the calling process's memory. The child's output goes
    to this process's stdout and stderr; raises MigrationFailed when it fails.
    """
    if await current_revision(database_url) == HEAD_REVISION:
        return
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "storage.migrate",
        env={**os.environ, _URL_VARIABLE: database_url},
    )
    code = await child.wait()
    if code != 0:
        raise MigrationFailed(f"migrating the database failed (exit status {code})")


async def downgrade_to(database_url: str, revision: str) -> None:
    """Revert migrations down to `revision` ("base" removes every table)."""
    from alembic import command

    await asyncio.to_thread(command.downgrade, alembic_config(database_url), revision)


async def current_revision(database_url: str) -> str | None:
    """The revision the database is at, or None for a database never migrated."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_current_revision)
    finally:
        await engine.dispose()


def _current_revision(connection: Connection) -> str | None:
    if not inspect(connection).has_table("alembic_version"):
        return None
    revision = connection.scalar(text("SELECT max(version_num) FROM alembic_version"))
    return None if revision is None else str(revision)


if __name__ == "__main__":  # the child of `upgrade_in_child`
    asyncio.run(upgrade_to_head(os.environ[_URL_VARIABLE]))
