"""The packaged Alembic migrations build exactly the schema of storage/models.py."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, insert, inspect, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from domain.vocabulary import (
    Channel,
    EmploymentType,
    Language,
    Occupation,
    PaymentPlan,
    Relationship,
    Sex,
    SponsorshipStatus,
    WorkerConsent,
)
from storage.db import create_engine
from storage.migrate import (
    current_revision,
    downgrade_to,
    head_revision,
    scripts_head,
    upgrade_in_child,
    upgrade_to_head,
)
from storage.models import (
    Asn,
    Base,
    ChannelAccount,
    Opd,
    Sponsorship,
    Worker,
)

NOW = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def _schema_differences(connection: Connection, metadata: MetaData) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(context, metadata))


def _table_names(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def test_migrations_form_one_linear_chain() -> None:
    from alembic.script import ScriptDirectory

    from storage.migrate import alembic_config

    script = ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite://"))
    chain = [rev.revision for rev in script.walk_revisions()]
    assert chain == [
        "0018_opd_status_index",
        "0017_pgplan",
        "0016_tg_inbound",
        "0015_coverage_counts",
        "0014_coverage",
        "0014_web",
        "0013_planner",
        "0013_budget",
        "0013_web",
        "0012",
        "0011",
        "0010",
        "0009",
        "0008",
        "0007",
        "0006",
        "0005",
        "0004",
        "0003",
        "0002",
        "0001",
    ]
    assert head_revision() == "0018_opd_status_index"
    assert scripts_head() == head_revision()  # the constant the bot reads, true to the scripts


async def test_the_bot_migrates_in_a_child_process_up_to_head(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'child.sqlite3'}"
    assert await current_revision(url) is None
    await upgrade_in_child(url)
    assert await current_revision(url) == head_revision()
    await upgrade_in_child(url)  # at head: no child, nothing changes
    assert await current_revision(url) == head_revision()


async def test_upgrade_of_an_empty_database_reaches_head(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'empty.sqlite3'}"
    assert await current_revision(url) is None

    await upgrade_to_head(url)

    assert await current_revision(url) == head_revision()
    engine = create_engine(url)
    async with engine.connect() as connection:
        tables = await connection.run_sync(_table_names)
    await engine.dispose()
    assert tables == set(Base.metadata.tables) | {"alembic_version"}


async def test_session_database_is_at_head(database_url: str) -> None:
    assert await current_revision(database_url) == head_revision()


async def test_migrated_schema_matches_the_models(db_engine: AsyncEngine) -> None:
    async with db_engine.connect() as connection:
        differences = await connection.run_sync(_schema_differences, Base.metadata)
    assert differences == []


async def test_schema_comparison_notices_a_model_change(db_engine: AsyncEngine) -> None:
    # Guards the test above: a column the migrations lack must show up as a difference.
    drifted = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.sorted_tables:
        table.to_metadata(drifted)
    drifted.tables["opd"].append_column(Column("rank", Integer, nullable=True))

    async with db_engine.connect() as connection:
        differences = await connection.run_sync(_schema_differences, drifted)

    assert [(diff[0], diff[2], diff[3].name) for diff in differences] == [
        ("add_column", "opd", "rank")
    ]


async def test_upgrade_twice_is_a_no_op(database_url: str, db_engine: AsyncEngine) -> None:
    async with db_engine.begin() as connection:
        await connection.execute(
            insert(Opd).values(code="BKL-X", name="Dinas X", search_name="dinas x", created_at=NOW)
        )

    await upgrade_to_head(database_url)

    assert await current_revision(database_url) == head_revision()
    async with db_engine.connect() as connection:
        codes = (await connection.scalars(select(Opd.code))).all()
    assert codes == ["BKL-X"]


async def test_downgrade_to_base_removes_every_table_and_upgrade_restores_them(
    database_url: str, db_engine: AsyncEngine
) -> None:
    await downgrade_to(database_url, "base")
    async with db_engine.connect() as connection:
        tables_after_downgrade = await connection.run_sync(_table_names)

    await upgrade_to_head(database_url)
    async with db_engine.connect() as connection:
        tables_after_upgrade = await connection.run_sync(_table_names)

    assert tables_after_downgrade <= {"alembic_version"}
    assert tables_after_upgrade == set(Base.metadata.tables) | {"alembic_version"}
    assert await current_revision(database_url) == head_revision()


async def test_server_defaults_fill_booleans_left_out_of_an_insert(
    db_engine: AsyncEngine,
) -> None:
    async with db_engine.begin() as connection:
        await connection.execute(
            insert(Opd).values(code="BKL-X", name="Dinas X", search_name="dinas x", created_at=NOW),
        )
        active = (await connection.scalars(select(Opd.active))).one()
    assert active is True


async def _add_sponsorship(
    session: AsyncSession, worker: Worker, asn: Asn, status: SponsorshipStatus
) -> None:
    session.add(
        Sponsorship(
            worker=worker,
            asn=asn,
            opd=asn.opd,
            occupation=Occupation.DRIVER,
            plan=PaymentPlan.MONTHLY,
            first_month=date(2026, 3, 1),
            status=status,
            worker_consent=WorkerConsent.GIVEN,
            created_at=NOW,
            status_changed_at=NOW,
        )
    )
    await session.flush()


async def _asn_and_worker(session: AsyncSession) -> tuple[Asn, Worker]:
    opd = Opd(code="BKL-X", name="Dinas X", search_name="dinas x", created_at=NOW)
    account = ChannelAccount(
        channel=Channel.CONSOLE, external_id="asn-1", language=Language.INDONESIAN, created_at=NOW
    )
    session.add_all([opd, account])
    await session.flush()
    asn = Asn(
        nip="198503152010011001",
        employment_type=EmploymentType.PNS,
        full_name="Budi Santoso",
        birth_date=date(1985, 3, 15),
        sex=Sex.MALE,
        opd=opd,
        phone_e164="+6281234567890",
        channel_account_id=account.id,
        registered_at=NOW,
    )
    worker = Worker(
        nik_hash=b"h" * 32,
        nik_ciphertext=b"c" * 40,
        nik_masked="1771********0001",
        full_name="Siti Aminah",
        birth_date=date(1990, 1, 1),
        sex=Sex.FEMALE,
        village="Kandang",
        district="Kampung Melayu",
        created_at=NOW,
        updated_at=NOW,
    )
    session.add_all([asn, worker])
    await session.flush()
    return asn, worker


async def test_a_worker_can_have_only_one_open_sponsorship(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    # The partial unique index's predicate is invisible to the schema comparison,
    # so its behaviour is tested directly on both backends.
    async with sessionmaker() as session:
        asn, worker = await _asn_and_worker(session)
        await _add_sponsorship(session, worker, asn, SponsorshipStatus.LAPSED)
        await _add_sponsorship(session, worker, asn, SponsorshipStatus.ENDED)
        await _add_sponsorship(session, worker, asn, SponsorshipStatus.ACTIVE)
        await session.commit()

        with pytest.raises(IntegrityError):
            await _add_sponsorship(session, worker, asn, SponsorshipStatus.WAITING_FOR_PIC)


async def test_0012_splits_the_old_kind_into_relationship_and_occupation(tmp_path: Path) -> None:
    """A family member had no occupation; household work is for the ASN; others keep theirs."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.sqlite3'}"
    await upgrade_to_head(url)
    engine = create_engine(url)
    try:
        async with AsyncSession(engine) as session, session.begin():
            asn, worker = await _asn_and_worker(session)
            # One open sponsorship per worker: the older two have ended.
            for status in (
                SponsorshipStatus.ENDED,
                SponsorshipStatus.LAPSED,
                SponsorshipStatus.ACTIVE,
            ):
                await _add_sponsorship(session, worker, asn, status)
        await downgrade_to(url, "0011")
        async with engine.begin() as connection:
            ids = (await connection.exec_driver_sql("SELECT id FROM sponsorship ORDER BY id")).all()
            for (sid,), kind in zip(ids, ("family_member", "driver", "fisher"), strict=True):
                await connection.exec_driver_sql(
                    f"UPDATE sponsorship SET occupation = '{kind}' WHERE id = {sid}"
                )
        await upgrade_to_head(url)
        async with engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(
                        Sponsorship.relationship_to_asn,
                        Sponsorship.occupation,
                        Sponsorship.occupation_text,
                    ).order_by(Sponsorship.id)
                )
            ).all()
            street = (await connection.scalars(select(Worker.street_address))).one()
    finally:
        await engine.dispose()
    assert [tuple(row) for row in rows] == [
        (Relationship.FAMILY, None, None),
        (Relationship.EMPLOYEE, Occupation.DRIVER, None),
        (Relationship.OTHER, Occupation.FISHER, None),
    ]
    assert street is None  # not asked before: the export shows it blank
