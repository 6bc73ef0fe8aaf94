"""The reference data files the bot ships, and the one lookup that finds them.

The files live in this package (installed with it as package data, see
pyproject's `[tool.setuptools.package-data]`), so an installed `sertakan`
finds them whatever the working directory:

- `tariff_bpu.csv`: the dated BPU tariff (`domain.tariff.load_tariff`);
- `holidays_id.csv`: national holidays and collective leave (`domain.workdays`);
- `opd_bengkulu.csv`: the OPD list loaded on the console's first run;
- `whatsapp_templates.json`: the approved WhatsApp templates (`bot.whatsapp.templates`);
- `payment_channels.csv`: where BPJS dues are paid (`domain.payment_channels`);
- `collective_columns_bpu.csv`: the collective file's column map (`storage.collective_columns`);
- `coverage_targets.csv`: the coverage targets per OPD and overall (`storage.coverage`).

`data_file(name, ...)` resolves one by name: a file setting the operator gave
(e.g. `PROGRAM_HOLIDAYS_FILE`), else `SERTAKAN_REFERENCE_DIR/<name>` when that
folder holds it, else the shipped copy here. It checks only that the shipped
copy exists; reading and validating a file is its loader's job.

A new data file: put it in this folder, give its name a constant below, match
its extension in pyproject's package-data globs (a test checks every file here
is matched), and read it through `data_file` (with a file setting of its own
when operators may need to point at another copy).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

TARIFF = "tariff_bpu.csv"
HOLIDAYS = "holidays_id.csv"
OPD_SEED = "opd_bengkulu.csv"
WHATSAPP_TEMPLATES = "whatsapp_templates.json"
PAYMENT_CHANNELS = "payment_channels.csv"
COLLECTIVE_COLUMNS = "collective_columns_bpu.csv"
COVERAGE_TARGETS = "coverage_targets.csv"


class DataFileMissing(FileNotFoundError):
    """No shipped data file of that name (a typo, or a file not added to the package)."""


def shipped(name: str) -> Path:
    """The packaged copy of data file `name`.

    Raises DataFileMissing when the package has no such file. The package is
    installed as a directory (pip never installs it zipped), so the copy is a
    plain file on disk that loaders taking a `Path` can open.
    """
    resource = files(__name__) / name
    if not isinstance(resource, Path) or not resource.is_file():
        raise DataFileMissing(f"no shipped data file {name!r} in {__name__}")
    return resource


def data_file(
    name: str, *, configured: Path | None = None, override_dir: Path | None = None
) -> Path:
    """The data file `name` to read: `configured` (the file's own setting) when given, else
    `override_dir / name` when that exists, else the shipped copy (`shipped`).

    A `configured` path is returned even when it does not exist: the caller
    reports it (a setting pointing nowhere is the operator's mistake to see),
    whereas an override folder may hold only some of the files.
    """
    if configured is not None:
        return configured
    if override_dir is not None:
        candidate = override_dir / name
        if candidate.is_file():
            return candidate
    return shipped(name)
