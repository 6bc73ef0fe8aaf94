"""Run the packaged Alembic migrations from code (the CLI and the tests use this).

The migrations live in `storage/migrations`, shipped inside the package, so this
works from an installed wheel without an alembic.ini.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from storage.db import create_engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    """An Alembic `Config` pointing at the packaged migrations and at `database_url`."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Silences Alembic's legacy-separator warning; we have a single versions folder.
    config.set_main_option("path_separator", "os")
    # ConfigParser interpolates "%", which URL-encoded passwords contain.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["database_url"] = database_url
    return config


def head_revision() -> str | None:
    """The newest revision shipped with this package (None only if there are none)."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return script.get_current_head()


async def upgrade_to_head(database_url: str) -> None:
    """Apply every pending migration; a database already at head is left untouched.

    Alembic's command API is synchronous and our env.py runs its own event loop,
    so the command runs in a worker thread: safe to await from a running loop.
    Does not guard against two processes migrating at once; run it from one place.
    """
    await asyncio.to_thread(command.upgrade, alembic_config(database_url), "head")


async def downgrade_to(database_url: str, revision: str) -> None:
    """Revert migrations down to `revision` ("base" removes every table)."""
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
    return MigrationContext.configure(connection).get_current_revision()
