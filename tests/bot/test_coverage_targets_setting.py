"""PROGRAM_COVERAGE_TARGETS_FILE: the shipped targets, an operator's file, a broken one."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.app import StartupError, coverage_targets
from bot.settings import AppSettings, DatabaseSettings, ProgramSettings, Settings
from storage.coverage import CoverageTargets


def settings_with(tmp_path: Path, targets_file: Path | None) -> Settings:
    return Settings(
        app=AppSettings(data_dir=tmp_path),
        database=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"),
        program=ProgramSettings(coverage_targets_file=targets_file),
    )


def test_the_shipped_targets_by_default(tmp_path: Path) -> None:
    targets = coverage_targets(settings_with(tmp_path, None))
    assert targets.overall == 144_000
    assert targets.for_opd("BKL-SETDA") == 3200


def test_an_operators_file_replaces_them(tmp_path: Path) -> None:
    path = tmp_path / "targets.csv"
    path.write_text("opd_code,target_workers\nTOTAL,500\nDINKES,120\n", encoding="utf-8")
    assert coverage_targets(settings_with(tmp_path, path)) == CoverageTargets(
        overall=500, per_opd={"DINKES": 120}
    )


def test_a_missing_file_means_no_targets_and_a_broken_one_stops_start_up(
    tmp_path: Path,
) -> None:
    assert coverage_targets(settings_with(tmp_path, tmp_path / "none.csv")) == CoverageTargets()
    broken = tmp_path / "broken.csv"
    broken.write_text("opd_code,target_workers\nDINKES,banyak\n", encoding="utf-8")
    with pytest.raises(StartupError, match=r"PROGRAM_COVERAGE_TARGETS_FILE.*line 2"):
        coverage_targets(settings_with(tmp_path, broken))
