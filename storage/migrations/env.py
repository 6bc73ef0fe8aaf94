"""Alembic environment for SERTAKAN, packaged inside `storage` (no alembic.ini needed).

The database URL comes from `config.attributes["database_url"]` (set by
`storage.migrate.alembic_config`) or the `sqlalchemy.url` main option. A caller
that already holds a synchronous `Connection` (for example inside
`AsyncConnection.run_sync`) may pass it as `config.attributes["connection"]`; it
is then used as is and its transaction is left to the caller.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import Enum, event
from sqlalchemy.engine import Connection

from storage.db import create_engine, is_sqlite
from storage.models import Base, UtcDateTime

config = context.config
target_metadata = Base.metadata


def _database_url() -> str:
    url = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: set attributes['database_url'] or sqlalchemy.url")
    return str(url)


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Render our custom column types as plain SQLAlchemy types in new migrations.

    Migrations must not import `storage.models` (the models move on, a migration
    is frozen): `UtcDateTime` becomes `sa.DateTime(timezone=True)` and a
    non-native enum becomes the `sa.String(n)` it is stored as, so adding an enum
    member never needs a migration.
    """
    if type_ != "type":
        return False
    if isinstance(obj, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    if isinstance(obj, Enum) and not obj.native_enum:
        return f"sa.String(length={obj.length})"
    return False


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite cannot ALTER most things; batch mode recreates the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        render_item=render_item,
    )


def do_run_migrations(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    url = _database_url()
    engine = create_engine(url)
    if is_sqlite(url):
        # Batch migrations drop and recreate tables; with foreign keys enforced that
        # would fail or cascade, so the migration connection turns them off (this
        # listener runs after the one in create_engine that turned them on).
        @event.listens_for(engine.sync_engine, "connect")
        def _foreign_keys_off(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=OFF")
            cursor.close()

    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_offline() -> None:
    """Emit the SQL to stdout (`alembic upgrade --sql`) instead of running it."""
    context.configure(
        url=_database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=is_sqlite(_database_url()),
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        do_run_migrations(connection)
    else:
        # Alembic's command API is synchronous; storage.migrate calls it in a worker
        # thread, so there is no running loop here and asyncio.run is safe.
        asyncio.run(run_async_migrations())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
