"""The administrator at the command line: `sertakan ...` parsed and run like `main` does,
on a runtime the test built (so the test's clock and database are used)."""

from __future__ import annotations

import pytest

from bot.app import Runtime
from bot.cli import build_parser, run_extension


class Admin:
    """Types `sertakan ...` commands and reads what they print."""

    def __init__(self, runtime: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
        self.runtime = runtime
        self._capsys = capsys
        self.out = ""
        self.err = ""

    async def run(self, *argv: str) -> int:
        status = await run_extension(build_parser().parse_args(argv), self.runtime)
        self.out, self.err = self._capsys.readouterr()
        return status
