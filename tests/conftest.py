"""Fixtures shared by the whole suite: the database, and the fake Graph API with a
WhatsApp client on it (the fakes themselves live in tests/fakes/).

The database is SQLite in a temporary file, or PostgreSQL when TEST_DATABASE_URL
is set. It is migrated once per session; every test that asks for `db_engine`
or `sessionmaker` starts from empty tables.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.whatsapp.client import WhatsAppClient, build_client
from bot.whatsapp.templates import TemplateBook, load_templates
from storage.db import create_engine, create_sessionmaker, is_sqlite
from storage.migrate import upgrade_to_head
from storage.models import Base
from tests.fakes.graph_api import SHIPPED_TEMPLATES, FakeGraphServer


def _run_in_own_loop(work: Callable[[], Awaitable[None]]) -> None:
    # asyncio.run in a fresh thread: it neither needs nor disturbs the event loop
    # pytest-asyncio keeps for the current test.
    async def main() -> None:
        await work()

    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, main()).result()


async def _drop_everything(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.exec_driver_sql("DROP SCHEMA public CASCADE")
            await connection.exec_driver_sql("CREATE SCHEMA public")
    finally:
        await engine.dispose()


@pytest.fixture(autouse=True)
def _umask_restored() -> Iterator[None]:
    """`bot.cli.main` sets the process umask (0o077); later tests see the one they started with."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield
    os.umask(previous)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """URL of a database migrated to head, fresh for this session.

    PostgreSQL (TEST_DATABASE_URL) has its public schema dropped first, so a
    re-run on the same server starts clean; never point it at real data.
    """
    url = os.environ.get("TEST_DATABASE_URL")
    if url is None:
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'sertakan.sqlite3'}"
    elif not is_sqlite(url):
        _run_in_own_loop(lambda: _drop_everything(url))
    _run_in_own_loop(lambda: upgrade_to_head(url))
    return url


@pytest.fixture
async def db_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the session's database, with every table emptied first."""
    engine = create_engine(database_url)
    async with engine.begin() as connection:
        # Children before parents, so foreign keys never block a delete. The coverage
        # counts (kept by triggers on sponsorship, migration 0015) go last, whatever the
        # metadata's order: emptied before sponsorship, its delete triggers would leave
        # negative counts behind for the next test.
        counts = {"coverage_area", "coverage_group"}
        tables = [t for t in reversed(Base.metadata.sorted_tables) if t.name not in counts]
        tables += [t for t in Base.metadata.sorted_tables if t.name in counts]
        for table in tables:
            await connection.execute(delete(table))
    yield engine
    await engine.dispose()


@pytest.fixture
def sessionmaker(db_engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions on `db_engine`, configured as in production."""
    return create_sessionmaker(db_engine)


@pytest.fixture(scope="session")
def book() -> TemplateBook:
    """The shipped WhatsApp templates."""
    return load_templates(SHIPPED_TEMPLATES)


@pytest.fixture
async def graph(book: TemplateBook) -> AsyncIterator[FakeGraphServer]:
    """The fake Graph API, with every shipped template approved."""
    async with FakeGraphServer() as fake:
        fake.approve_book(book.templates.values())
        yield fake


@pytest.fixture
async def wa_client(graph: FakeGraphServer) -> AsyncIterator[WhatsAppClient]:
    """Our WhatsApp client on `graph`."""
    client = build_client(graph.settings())
    yield client
    await client.close()
