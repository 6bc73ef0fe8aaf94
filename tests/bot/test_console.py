"""The console channel end to end: typed lines in, printed replies out, real engine and database."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.app import Runtime, build_runtime, seed_opds_if_empty
from bot.console import ConsoleChannel
from bot.settings import (
    AppSettings,
    DatabaseSettings,
    ProgramSettings,
    Settings,
    TelegramSettings,
)
from domain.vocabulary import Channel, EmploymentType, Language
from storage.crypto import generate_key
from storage.models import Asn, ChannelAccount
from tests.fakes.chat import ASN_NIP, OPD_SEED
from tests.fakes.clock import FrozenClock

_OPTION = re.compile(r"^\s+\[(\d+)\] (.*)$")


@dataclasses.dataclass(frozen=True, slots=True)
class Choose:
    """A scripted line that types the number of the option whose label has `label_part`."""

    label_part: str


class Terminal:
    """A scripted person at the console: answers `read_line` from a script, collects output.

    A `Choose` step is resolved against the options printed last, as a person
    reading the screen would; plain strings are typed as they are.
    """

    def __init__(self, script: list[str | Choose]) -> None:
        self._script = list(script)
        self.output: list[str] = []
        #: (typed line, index into `output` where its answer starts)
        self.typed: list[tuple[str, int]] = []

    def write(self, text: str) -> None:
        self.output.extend(text.strip("\n").splitlines())

    async def read_line(self, prompt: str) -> str | None:
        if not self._script:
            return None
        step = self._script.pop(0)
        line = step if isinstance(step, str) else self.number_of(step.label_part)
        self.typed.append((line, len(self.output)))
        return line

    def latest_options(self) -> list[str]:
        """The labels of the last numbered list on screen, in order."""
        labels: list[str] = []
        for line in reversed(self.output):
            match = _OPTION.match(line)
            if match is None:
                if labels:
                    break
                continue
            labels.insert(0, match.group(2))
            if match.group(1) == "1":
                break
        return labels

    def number_of(self, label_part: str) -> str:
        labels = self.latest_options()
        wanted = label_part.casefold()
        numbers = [n for n, label in enumerate(labels, 1) if wanted in label.casefold()]
        if len(numbers) > 1:  # "Setuju" / "Tidak setuju": the label starting with it wins
            numbers = [n for n in numbers if _bare(labels[n - 1]).startswith(wanted)]
        if len(numbers) != 1:
            raise AssertionError(f"{label_part!r} matches {len(numbers)} of {labels}")
        return str(numbers[0])

    def answer(self, step: int) -> list[str]:
        """The output printed in answer to the script's `step`-th line (0-based)."""
        start = self.typed[step][1]
        end = self.typed[step + 1][1] if step + 1 < len(self.typed) else None
        return self.output[start:end]


def _bare(label: str) -> str:
    """A label without its leading emoji and spaces, case-folded."""
    return re.sub(r"^\W+", "", label.casefold())


def options_in(lines: list[str]) -> list[str]:
    """The option labels printed in `lines`, without their leading emoji."""
    return [re.sub(r"^\W+", "", match.group(2)) for line in lines if (match := _OPTION.match(line))]


@pytest.fixture
async def runtime(
    tmp_path: Path,
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],  # empties every table first
) -> AsyncIterator[Runtime]:
    settings = Settings(
        app=AppSettings(
            data_dir=tmp_path,
            nik_key=SecretStr(generate_key()),
            default_language=Language.INDONESIAN,
            timezone="Asia/Jakarta",
            opd_seed_file=OPD_SEED,
        ),
        database=DatabaseSettings(url=database_url, auto_migrate=False, echo=False),
        program=ProgramSettings(
            min_age=15, max_age=65, max_workers_per_asn=5, draft_idle_minutes=30
        ),
        telegram=TelegramSettings(token=None),
    )
    runtime = await build_runtime(settings, clock=FrozenClock(), migrate=False)
    try:
        assert await seed_opds_if_empty(runtime) > 0
        yield runtime
    finally:
        await runtime.close()


async def test_registration_typed_in_the_console_creates_the_asn(
    runtime: Runtime, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    terminal = Terminal(
        [
            "1",  # the first button of the start menu
            Choose("Setuju"),
            ASN_NIP,
            "Budi Santoso",
            "kesehatan",
            Choose("Dinas Kesehatan"),
            "081234567890",  # the console has no share-contact button: typed
            Choose("Konfirmasi"),
            "/menu",
            ":user pic",
            ":user asn",
        ]
    )
    console = ConsoleChannel(
        runtime.engine,
        runtime.clock,
        runtime.catalogs,
        read_line=terminal.read_line,
        write=terminal.write,
    )
    await console.run()

    start_menu = options_in(terminal.output[: terminal.typed[0][1]])
    assert start_menu[0] == "Daftar sebagai ASN"
    assert options_in(terminal.answer(0))[0] == "Setuju"  # "1" opened the registration
    assert any("(ketik nomor HP Anda" in line for line in terminal.answer(5))
    assert any("Pendaftaran ASN berhasil" in line for line in terminal.answer(7))

    registered_menu = options_in(terminal.answer(8))
    assert "Daftar sebagai ASN" not in registered_menu
    assert "Daftarkan pekerja" in " ".join(registered_menu)
    # A new simulated person has a conversation of their own, starting unregistered...
    pic = terminal.answer(9)
    assert pic[0] == "Sekarang Anda adalah pengguna \u201cpic\u201d."
    assert "Daftar sebagai ASN" in options_in(pic)
    # ...and switching back finds the ASN still registered.
    assert "Daftar sebagai ASN" not in options_in(terminal.answer(10))

    async with sessionmaker() as session:
        asn = (await session.execute(select(Asn))).scalar_one()
        account = await session.get_one(ChannelAccount, asn.channel_account_id)
        accounts = (await session.execute(select(ChannelAccount))).scalars().all()
    assert (asn.nip, asn.full_name, asn.phone_e164) == (ASN_NIP, "Budi Santoso", "+6281234567890")
    assert asn.employment_type is EmploymentType.PNS
    assert (account.channel, account.external_id) == (Channel.CONSOLE, "asn")
    assert {(a.channel, a.external_id) for a in accounts} == {
        (Channel.CONSOLE, "asn"),
        (Channel.CONSOLE, "pic"),
    }
