"""The shipped reference data (tariff, holidays, OPD seed, WhatsApp templates): found from
any working directory, replaced by an operator's copy, and packaged with the wheel."""

from __future__ import annotations

import fnmatch
import tomllib
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

import sertakan_data
from bot.app import build_runtime, engine_config, seed_opds_if_empty, work_calendar
from bot.settings import Settings
from bot.whatsapp.templates import load_templates
from domain.tariff import load_tariff
from domain.workdays import load_holidays
from sertakan_data import (
    HOLIDAYS,
    OPD_SEED,
    TARIFF,
    WHATSAPP_TEMPLATES,
    DataFileMissing,
    data_file,
    shipped,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = Path(sertakan_data.__file__).parent
NAMES = (TARIFF, HOLIDAYS, OPD_SEED, WHATSAPP_TEMPLATES)
#: Monday 23 November 2026: a working day in the shipped list.
MONDAY = date(2026, 11, 23)


def clean_environment(monkeypatch: pytest.MonkeyPatch, elsewhere: Path) -> None:
    """An operator's shell in a directory that is not the checkout, no data settings."""
    for name in (
        "SERTAKAN_REFERENCE_DIR",
        "SERTAKAN_OPD_SEED_FILE",
        "PROGRAM_TARIFF_FILE",
        "PROGRAM_HOLIDAYS_FILE",
        "WHATSAPP_TEMPLATES_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(elsewhere)


async def test_the_bot_started_outside_the_checkout_finds_its_shipped_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_environment(monkeypatch, tmp_path)
    settings = Settings()  # reads the environment, as `sertakan` does
    settings.app.data_dir = tmp_path
    settings.database.url = f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
    runtime = await build_runtime(settings)
    try:
        # The console's first run loads the Bengkulu OPD list; 17 August is a holiday.
        assert await seed_opds_if_empty(runtime) > 30
        assert not runtime.calendar.is_working_day(date(2026, 8, 17))
        assert runtime.engine.config.tariff.periods == load_tariff(shipped(TARIFF)).periods
    finally:
        await runtime.close()
    for name in NAMES:
        path = settings.data_file(name, None)
        assert path.is_file() and path.parent == PACKAGE_DIR, name
    assert load_templates(settings.data_file(WHATSAPP_TEMPLATES, None)).templates


def test_the_reference_dir_replaces_the_files_it_holds_and_a_file_setting_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_environment(monkeypatch, tmp_path)
    ours = tmp_path / "reference"
    ours.mkdir()
    (ours / HOLIDAYS).write_text("date,name\n2026-11-23,Hari libur daerah\n", encoding="utf-8")
    monkeypatch.setenv("SERTAKAN_REFERENCE_DIR", str(ours))
    settings = Settings()  # reads the environment, as `sertakan` does
    clock = lambda: datetime(2026, 11, 20, tzinfo=UTC)  # noqa: E731
    assert not work_calendar(settings, clock).is_working_day(MONDAY)
    # The folder has no tariff: the shipped one is read.
    assert settings.data_file(TARIFF, settings.program.tariff_file) == shipped(TARIFF)
    assert engine_config(settings).tariff.periods == load_tariff(shipped(TARIFF)).periods
    # A file named by its own setting wins over the folder.
    other = tmp_path / "libur.csv"
    other.write_text("date,name\n2026-11-24,Cuti bersama\n", encoding="utf-8")
    monkeypatch.setenv("PROGRAM_HOLIDAYS_FILE", str(other))
    settings = Settings()  # reads the environment, as `sertakan` does
    calendar = work_calendar(settings, clock)
    assert calendar.is_working_day(MONDAY)
    assert not calendar.is_working_day(date(2026, 11, 24))


def test_every_constant_names_a_shipped_file_and_a_wrong_name_is_refused() -> None:
    for name in NAMES:
        assert shipped(name).is_file()
        assert data_file(name) == shipped(name)
    assert load_holidays(shipped(HOLIDAYS)).covers(2026)
    with pytest.raises(DataFileMissing, match=r"holidays\.csv"):
        data_file("holidays.csv")


def test_the_package_data_globs_ship_every_data_file() -> None:
    """What `pip install .` puts in the wheel, read from pyproject as setuptools reads it."""
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    setuptools = config["tool"]["setuptools"]
    assert any(
        fnmatch.fnmatch("sertakan_data", pattern)
        for pattern in setuptools["packages"]["find"]["include"]
    )
    globs = setuptools["package-data"]["sertakan_data"]
    data_files = sorted(
        path.relative_to(PACKAGE_DIR).as_posix()
        for path in PACKAGE_DIR.rglob("*")
        if path.is_file() and path.suffix not in {".py", ".pyc"} and "__pycache__" not in path.parts
    )
    assert set(NAMES) <= set(data_files)
    unshipped = [name for name in data_files if not any(fnmatch.fnmatch(name, g) for g in globs)]
    assert unshipped == [], "add their extension to [tool.setuptools.package-data]"
