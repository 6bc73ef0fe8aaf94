"""Start-up: the NIK key rules, settings from the environment, and the CLI commands."""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import sertakan_data
from bot.app import (
    StartupError,
    build_planners,
    build_runtime,
    configured_nik_key,
    engine_config,
    seed_opds_if_empty,
)
from bot.cli import main
from bot.settings import (
    AppSettings,
    DatabaseSettings,
    Environment,
    PlannerSettings,
    ProgramSettings,
    Settings,
)
from domain.vocabulary import Channel
from sertakan_data import shipped
from storage.crypto import KeyRing, NikCipher, decode_key, generate_key
from storage.dead_letters import DeadLetters
from storage.models import Opd


def _settings(tmp_path: Path, **app: object) -> Settings:
    return Settings(
        app=AppSettings(data_dir=tmp_path, **app),  # type: ignore[arg-type]
        database=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"),
    )


def test_production_without_nik_key_is_a_clear_startup_error(tmp_path: Path) -> None:
    settings = _settings(tmp_path, env=Environment.PRODUCTION)
    with pytest.raises(StartupError, match="SERTAKAN_NIK_KEY is required in production"):
        configured_nik_key(settings)
    assert not (tmp_path / "nik.key").exists()


def test_malformed_nik_key_is_a_clear_startup_error(tmp_path: Path) -> None:
    settings = _settings(tmp_path, nik_key=SecretStr("c2hvcnQ="))
    with pytest.raises(StartupError, match="32 bytes"):
        configured_nik_key(settings)


async def test_development_creates_and_reuses_a_private_key_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(tmp_path)
    with caplog.at_level(logging.WARNING, logger="bot.app"):
        runtime = await build_runtime(settings)
    await runtime.close()
    key_file = tmp_path / "nik.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert "created a new NIK key file" in caplog.text and "back it up" in caplog.text
    first = runtime.cipher.key_id
    runtime = await build_runtime(settings)
    await runtime.close()
    assert runtime.cipher.key_id == first == NikCipher(decode_key(key_file.read_text())).key_id


def test_configured_key_wins(tmp_path: Path) -> None:
    key = generate_key()
    settings = _settings(tmp_path, env=Environment.PRODUCTION, nik_key=SecretStr(key))
    assert configured_nik_key(settings) == KeyRing.single(decode_key(key))


def test_age_bounds_must_be_ordered(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    settings.program = ProgramSettings(min_age=70, max_age=65)
    with pytest.raises(StartupError, match="PROGRAM_MIN_AGE"):
        engine_config(settings)


def test_settings_read_flat_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://u@h/db")
    monkeypatch.setenv("TELEGRAM_API_BASE", "http://127.0.0.1:9999")
    monkeypatch.setenv("PROGRAM_MAX_WORKERS_PER_ASN", "7")
    settings = Settings()
    assert settings.database_url == "postgresql+asyncpg://u@h/db"
    assert settings.telegram.api_base == "http://127.0.0.1:9999"
    assert settings.program.max_workers_per_asn == 7


def test_consent_settings_reach_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings()
    config = engine_config(settings)
    # PRODUCT 4.6: by default no accept without the worker's consent; links live 14 days.
    assert config.accept_without_consent is False
    assert config.consent_link_ttl == timedelta(days=14)
    monkeypatch.setenv("PROGRAM_ACCEPT_WITHOUT_CONSENT", "true")
    monkeypatch.setenv("PROGRAM_CONSENT_LINK_DAYS", "7")
    monkeypatch.setenv("TELEGRAM_BOT_USERNAME", "@SertakanBot")
    config = engine_config(Settings())
    assert config.accept_without_consent is True
    assert config.consent_link_ttl == timedelta(days=7)
    assert config.telegram_bot_username == "SertakanBot"


def test_cli_migrate_and_opd_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SERTAKAN_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert main(["migrate"]) == 0
    assert (tmp_path / "sertakan.db").exists()
    csv = tmp_path / "opd.csv"
    csv.write_text("code,name\nA-1,Dinas Satu\nA-2,Badan Dua\n", encoding="utf-8")
    assert main(["opd", "load", str(csv)]) == 0
    assert "2 new" in capsys.readouterr().out
    assert main(["opd", "load", str(csv)]) == 0
    assert "2 unchanged" in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    bad.write_text("kode,nama\nX,Y\n", encoding="utf-8")
    assert main(["opd", "load", str(bad)]) == 1
    assert "bad.csv" in capsys.readouterr().err


def test_cli_refuses_production_start_without_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SERTAKAN_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SERTAKAN_ENV", "production")
    monkeypatch.delenv("SERTAKAN_NIK_KEY", raising=False)
    assert main(["console"]) == 2
    assert "SERTAKAN_NIK_KEY is required in production" in capsys.readouterr().err


def test_run_in_production_without_a_messenger_refuses_instead_of_opening_the_console(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A service or container whose env file lacks the credentials stops with a reason
    (exit 2): no console reading end-of-file, no administrator sign-in link in its log."""
    for name in list(os.environ):
        if name.startswith(("TELEGRAM_", "WHATSAPP_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SERTAKAN_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SERTAKAN_ENV", "production")
    monkeypatch.setenv("SERTAKAN_NIK_KEY", generate_key())
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'bot.sqlite3'}")
    assert main(["run"]) == 2
    captured = capsys.readouterr()
    assert "no messenger is configured: set TELEGRAM_TOKEN" in captured.err
    assert "signin" not in captured.out + captured.err
    assert "Konsol SERTAKAN" not in captured.out


def test_key_generate_prints_a_usable_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["key", "generate"]) == 0
    assert len(decode_key(capsys.readouterr().out.strip())) == 32


OPD_SEED = shipped(sertakan_data.OPD_SEED)


async def test_runtime_migrates_and_seeds_opds_once(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    settings.app.opd_seed_file = OPD_SEED
    runtime = await build_runtime(settings)
    try:
        assert await seed_opds_if_empty(runtime) > 30
        assert await seed_opds_if_empty(runtime) == 0
        sessionmaker: async_sessionmaker[AsyncSession] = runtime.sessionmaker
        async with sessionmaker() as session:
            count = (await session.execute(select(func.count(Opd.id)))).scalar_one()
        assert count > 30
    finally:
        await runtime.close()


def test_cli_failed_list_shows_parked_updates_without_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SERTAKAN_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert main(["failed", "list"]) == 0
    assert "no parked updates" in capsys.readouterr().out

    async def park() -> None:
        runtime = await build_runtime(Settings())
        try:
            await DeadLetters(runtime.sessionmaker, runtime.cipher).park(
                channel=Channel.TELEGRAM,
                update_id="77",
                sender_id="42",
                payload='{"text": "3201014708900001"}',
                error_type="OperationalError",
                attempts=5,
                now=datetime(2026, 11, 21, 3, 0, tzinfo=UTC),
            )
        finally:
            await runtime.close()

    asyncio.run(park())
    assert main(["failed", "list"]) == 0
    out = capsys.readouterr().out
    assert "telegram\t77\t42\tOperationalError\t5\t2026-11-21 10:00:00 WIB" in out
    assert "3201014708900001" not in out


def test_cli_administrator_commands_are_wired_into_sertakan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SERTAKAN_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TELEGRAM_BOT_USERNAME", "@SertakanBot")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    csv = tmp_path / "opd.csv"
    csv.write_text("code,name\nA-1,Dinas Satu\n", encoding="utf-8")
    assert main(["opd", "load", str(csv)]) == 0
    assert main(["pic", "appoint", "--opd", "A-1", "--telegram-id", "424242"]) == 0
    assert main(["pic", "list"]) == 0
    assert "424242" in capsys.readouterr().out
    assert main(["invite", "create", "--opd", "A-1"]) == 0
    assert "https://t.me/SertakanBot?start=PIC-" in capsys.readouterr().out
    assert main(["coverage"]) == 0
    assert "Dinas Satu" in capsys.readouterr().out
    assert main(["outbox", "status"]) == 0
    capsys.readouterr()
    assert main(["export", "--opd", "A-1", "--out", str(tmp_path / "x.xlsx")]) == 1
    assert not (tmp_path / "x.xlsx").exists()
    assert main(["audit", "list"]) == 0
    out = capsys.readouterr().out
    assert "pic.appoint" in out and "invite.create" in out


async def test_background_schedules_dispatcher_digest_and_housekeeping(tmp_path: Path) -> None:
    from bot.app import build_background

    settings = _settings(tmp_path)
    runtime = await build_runtime(settings)
    try:
        scheduler, dispatcher = build_background(runtime, {})
        jobs = {job.id: job for job in scheduler.get_jobs()}
        # Housekeeping, the digest and the reminders are the planning tick's jobs
        # (scheduler/planning.py), run once per day across processes.
        assert set(jobs) == {"outbox_dispatcher", "planning"}
        assert str(jobs["planning"].trigger) == "interval[0:01:00]"
        # The shipped holiday list is loaded: 17 August is not a working day.
        assert not runtime.calendar.is_working_day(datetime(2026, 8, 17).date())
        await dispatcher.stop()
    finally:
        await runtime.close()


def test_a_tariff_file_with_overlapping_periods_stops_start_up_naming_the_lines(
    tmp_path: Path,
) -> None:
    tariff = tmp_path / "tariff.csv"
    tariff.write_text(
        "effective_from,effective_until,jkk_per_mille,jkm,discount_percent,"
        "discount_excluded_funding,note\n"
        "2015-07-01,2026-01-01,10,6800,0,,PP 44/2015\n"
        "2025-12-01,2026-06-01,10,6800,50,regional_budget,discount\n",
        encoding="utf-8",
    )
    settings = _settings(tmp_path)
    settings.program = ProgramSettings(tariff_file=tariff)
    with pytest.raises(StartupError, match=r"tariff\.csv: line 3: .*overlaps .* on line 2"):
        engine_config(settings)
    tariff.write_text(tariff.read_text().replace("2026-01-01", "2025-12-01"), encoding="utf-8")
    table = engine_config(settings).tariff
    assert table.monthly_dues(date(2025, 12, 1)).total == 8_400


def test_a_column_map_with_an_unknown_source_stops_start_up_naming_the_line(
    tmp_path: Path,
) -> None:
    columns = tmp_path / "columns.csv"
    columns.write_text(
        "# my branch's template\nheader,source,width\nNIK,nik,20\nPekerjaan,ocupation,28\n",
        encoding="utf-8",
    )
    settings = _settings(tmp_path)
    settings.program = ProgramSettings(collective_columns_file=columns)
    with pytest.raises(StartupError, match=r"columns\.csv: line 4: unknown source 'ocupation'"):
        engine_config(settings)
    columns.write_text(columns.read_text().replace("ocupation", "occupation"), encoding="utf-8")
    assert engine_config(settings).collective_columns.headers == ("NIK", "Pekerjaan")


async def test_the_planner_settings_reach_the_planner_and_its_child(tmp_path: Path) -> None:
    """PLANNER_PAGES_IN_FLIGHT and PLANNER_CHUNK_SIZE are what the planner (and the spec
    its off-loop child is built from) uses."""
    settings = _settings(tmp_path)
    settings.planner = PlannerSettings(chunk_size=700, pages_in_flight=3)
    runtime = await build_runtime(settings)
    try:
        reminders, _ = build_planners(runtime)
        spec = reminders.spec
        assert (spec.chunk_size, spec.pages_in_flight) == (700, 3)
    finally:
        await runtime.close()
