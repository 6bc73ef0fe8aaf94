"""A `bot.app.Runtime` on the test database, built as `sertakan` builds it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from pydantic import SecretStr

from bot.app import Runtime, build_runtime, seed_opds_if_empty
from bot.settings import AppSettings, DatabaseSettings, Settings, TelegramSettings
from storage.crypto import generate_key
from tests.fakes.chat import OPD_SEED
from tests.fakes.clock import FrozenClock


@contextlib.asynccontextmanager
async def open_runtime(
    data_dir: Path,
    database_url: str,
    *,
    clock: FrozenClock | None = None,
    nik_key: str | None = None,
    seed_opds: bool = False,
) -> AsyncIterator[Runtime]:
    """Explicit settings (nothing from the environment), no Telegram, no migration."""
    settings = Settings(
        app=AppSettings(
            data_dir=data_dir,
            nik_key=SecretStr(nik_key or generate_key()),
            timezone="Asia/Jakarta",
            opd_seed_file=OPD_SEED,
        ),
        database=DatabaseSettings(url=database_url, auto_migrate=False),
        telegram=TelegramSettings(token=None),
    )
    runtime = await build_runtime(settings, clock=clock or FrozenClock(), migrate=False)
    try:
        if seed_opds:
            assert await seed_opds_if_empty(runtime) > 0
        yield runtime
    finally:
        await runtime.close()
