"""`sertakan web link --admin` and `sertakan leader ...` (issue 13)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.app import Runtime
from storage.models import AuditLog, ProgramLeader
from storage.web_access import LinkProblem, Principal, WebRole, redeem_link
from tests.fakes.admin import Admin
from tests.fakes.runtime import open_runtime
from tests.fakes.web import link_token


@pytest.fixture
async def runtime(
    tmp_path: Path,
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],  # empties every table first
) -> AsyncIterator[Runtime]:
    async with open_runtime(tmp_path, database_url, seed_opds=True) as runtime:
        yield runtime


@pytest.fixture
def admin(runtime: Runtime, capsys: pytest.CaptureFixture[str]) -> Admin:
    return Admin(runtime, capsys)


async def test_web_link_prints_a_one_time_administrator_link(
    admin: Admin, runtime: Runtime
) -> None:
    assert await admin.run("web", "link", "--admin") == 0
    assert admin.out.startswith("http://127.0.0.1:8080/web/signin?t=")
    assert "once, for 10 minutes" in admin.err
    token = link_token(admin.out)
    async with runtime.db.begin() as connection:
        first = await redeem_link(connection, token, now=runtime.clock())
        second = await redeem_link(connection, token, now=runtime.clock())
    assert isinstance(first, Principal) and first.role is WebRole.ADMIN
    assert first.admin_login  # the login that ran the command
    assert second is LinkProblem.USED


async def test_leader_appoint_list_and_remove(admin: Admin, runtime: Runtime) -> None:
    assert await admin.run("leader", "appoint", "--telegram-id", "4001") == 0
    assert admin.out.startswith("program leader ") and ": telegram:4001" in admin.out
    leader_id = admin.out.split()[2].rstrip(":")
    assert await admin.run("leader", "appoint", "--telegram-id", "4001") == 0
    assert f"already program leader {leader_id}" in admin.out
    assert await admin.run("leader", "list") == 0
    assert "telegram:4001" in admin.out
    assert await admin.run("leader", "remove", leader_id) == 0
    assert await admin.run("leader", "remove", leader_id) == 1
    assert "no current program leader" in admin.err
    assert await admin.run("leader", "list") == 0
    assert "no program leaders" in admin.out
    async with runtime.db.connect() as connection:
        removed = await connection.scalar(select(ProgramLeader.removed_at))
        actions = (await connection.execute(select(AuditLog.action))).scalars().all()
    assert removed is not None
    assert actions.count("leader.appoint") == 1 and actions.count("leader.remove") == 1
