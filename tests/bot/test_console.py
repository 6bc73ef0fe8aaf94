"""The console channel end to end: typed lines in, printed replies out, real engine and database."""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.app import Runtime
from bot.console import MAX_FILE_BYTES, ConsoleChannel, ConsoleSender, save_document
from domain.vocabulary import Channel, EmploymentType, Language
from handlers.types import Document, Reply
from scheduler.sending import OutgoingNotice, Sent
from storage import roles
from storage.audit import Actor
from storage.models import Asn, ChannelAccount, Opd
from tests.fakes.chat import ASN_NIP
from tests.fakes.clock import FrozenClock
from tests.fakes.runtime import open_runtime

_OPTION = re.compile(r"^\s+\[(\d+)\] (.*)$")
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


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
    async with open_runtime(tmp_path, database_url, seed_opds=True) as runtime:
        yield runtime


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


# -- files and notices -------------------------------------------------------------


async def appoint_console_pic(runtime: Runtime, user: str) -> None:
    async with runtime.db.begin() as connection:
        opd_id = (
            await connection.execute(select(Opd.id).where(Opd.code == "BKL-DINKES"))
        ).scalar_one()
        await roles.appoint(
            connection,
            opd_id=opd_id,
            channel=Channel.CONSOLE,
            external_id=user,
            phone_e164=None,
            actor=Actor.admin("test"),
            now=runtime.clock(),
        )


async def test_file_command_sends_the_file_to_the_engine(runtime: Runtime, tmp_path: Path) -> None:
    await appoint_console_pic(runtime, "pic")
    wrong_columns = tmp_path / "dari bpjs.csv"
    wrong_columns.write_text("nama;alamat\nSiti;Sukamaju\n", encoding="utf-8")
    big = tmp_path / "besar.xlsx"
    with big.open("wb") as file:  # sparse: no disk space used
        file.truncate(MAX_FILE_BYTES + 1)
    missing = tmp_path / "tidak ada.csv"
    terminal = Terminal(
        [
            ":file",
            f":file {missing}",
            f":file {tmp_path}",
            ":user pic",
            f':file "{wrong_columns}"',
            f":file {big}",
        ]
    )
    console = ConsoleChannel(
        runtime.engine,
        runtime.clock,
        runtime.catalogs,
        read_line=terminal.read_line,
        write=terminal.write,
        files_dir=tmp_path / "out",
    )
    await console.run()

    t = runtime.catalogs.translator(Language.INDONESIAN)
    assert terminal.answer(0) == [t("console.file_usage")]
    assert terminal.answer(1) == [t("console.file_missing", path=str(missing))]
    assert terminal.answer(2) == [t("console.file_missing", path=str(tmp_path))]
    # The PIC's file reached the engine with its name and its bytes: the engine
    # read the columns out of the content.
    columns_reply = "\n".join(terminal.answer(4))
    assert "dari bpjs.csv" in columns_reply
    assert "nama" in columns_reply and "alamat" in columns_reply
    assert t("pic.import.unreadable", file="dari bpjs.csv") not in columns_reply
    # Too large: sent flagged, without content.
    assert any(t("pic.import.too_large") in line for line in terminal.answer(5))
    assert not (tmp_path / "out").exists()


def _console(runtime: Runtime, terminal: Terminal, files_dir: Path) -> ConsoleChannel:
    return ConsoleChannel(
        runtime.engine,
        runtime.clock,
        runtime.catalogs,
        read_line=terminal.read_line,
        write=terminal.write,
        files_dir=files_dir,
    )


async def test_a_document_from_the_bot_is_saved_without_overwriting(
    runtime: Runtime, tmp_path: Path
) -> None:
    terminal = Terminal([])
    files_dir = tmp_path / "console_files"
    console = _console(runtime, terminal, files_dir)
    first = Document("DINKES-2026-001.xlsx", b"first", XLSX)
    console.render([Reply("Berkas kolektif siap.", document=first)])
    console.render([Reply("Sekali lagi.", document=Document("DINKES-2026-001.xlsx", b"second"))])
    console.render([Reply("Tanpa ekstensi.", document=Document("../../laporan", b"third"))])

    t = runtime.catalogs.translator(Language.INDONESIAN)
    saved = [files_dir / "DINKES-2026-001.xlsx", files_dir / "DINKES-2026-001-2.xlsx"]
    # The saved path comes first, then the reply as usual.
    assert terminal.output == [
        t("console.document_saved", path=str(saved[0])),
        "bot> Berkas kolektif siap.",
        t("console.document_saved", path=str(saved[1])),
        "bot> Sekali lagi.",
        t("console.document_saved", path=str(files_dir / "laporan")),
        "bot> Tanpa ekstensi.",
    ]
    assert [path.read_bytes() for path in saved] == [b"first", b"second"]
    # Owner-only even under a permissive umask (issue 11: exports were 0644).
    assert {path.stat().st_mode & 0o777 for path in saved} == {0o600}
    # A name cannot climb out of the folder.
    assert (files_dir / "laporan").read_bytes() == b"third"
    assert not (tmp_path.parent / "laporan").exists()


def test_save_document_names(tmp_path: Path) -> None:
    for name in ("", ".", "..", "a/b/c.csv", "C:\\Users\\pic\\kpj.csv"):
        save_document(Document(name, name.encode()), tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "c.csv",
        "document",
        "document-2",
        "document-3",
        "kpj.csv",
    ]


async def test_console_sender_prints_notices_for_anyone(runtime: Runtime, tmp_path: Path) -> None:
    terminal = Terminal([])
    sender = _console(runtime, terminal, tmp_path).sender
    assert sender.channel is Channel.CONSOLE
    result = await sender.send(
        OutgoingNotice(
            outbox_id=7,
            channel=Channel.CONSOLE,
            recipient="asn",
            kind="card_ready",
            body="Kartu BPJS Siti Aminah sudah siap.\nAmbil di kantor.",
            template=None,
            params={},
        )
    )
    assert result == Sent()
    t = runtime.catalogs.translator(Language.INDONESIAN)
    assert terminal.output == [
        t("console.notice", user="asn"),
        "Kartu BPJS Siti Aminah sudah siap.",
        "Ambil di kantor.",
    ]
    # A sender on its own prints through the write function it is given.
    lines: list[str] = []
    standalone = ConsoleSender(runtime.catalogs, write=lines.append)
    await standalone.send(
        OutgoingNotice(8, Channel.CONSOLE, "pic", "digest", "Ada 2 pendaftaran baru.", None, {})
    )
    assert lines == ["\n" + t("console.notice", user="pic"), "Ada 2 pendaftaran baru."]


async def test_two_workers_paid_by_typing_their_numbers_in_the_console(
    runtime: Runtime, sessionmaker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    from domain.vocabulary import PaymentStatus
    from storage.models import Payment
    from tests.fakes.chat import OTHER_NIK, WORKER_NIK, Chat
    from tests.fakes.workbench import Office, activate

    await appoint_console_pic(runtime, "pic")
    clock = runtime.clock
    assert isinstance(clock, FrozenClock)  # the fixture's
    chat = functools.partial(Chat, runtime.engine, clock, channel=Channel.CONSOLE)
    office = Office(
        engine=runtime.engine,
        clock=clock,
        sessionmaker=sessionmaker,
        asn=chat(sender="asn"),
        pic=chat(sender="pic"),
        other_pic=chat(sender="nobody"),
    )
    await office.asn.register()
    await activate(office, (WORKER_NIK, "Siti Aminah"), (OTHER_NIK, "Joko Susilo"))
    terminal = Terminal(
        ["bayar", "1 2", "3", Choose("sesuai tarif"), Choose("Lewati"), Choose("Catat pembayaran")]
    )
    await _console(runtime, terminal, tmp_path / "out").run()

    workers = terminal.answer(0)
    assert "1. Siti Aminah – KPJ 90000000000" in workers
    assert "Semua pekerja (2)" in options_in(workers)
    assert any("Berapa bulan untuk setiap pekerja" in line for line in terminal.answer(1))
    assert any("Total iuran untuk 2 pekerja Rp100.800" in line for line in terminal.answer(2))
    summary = terminal.answer(4)
    assert "• Joko Susilo: Desember 2026–Februari 2027 (3 bulan), Rp50.400" in summary
    assert "Total: Rp100.800" in summary
    assert any("untuk 2 pekerja tercatat" in line for line in terminal.answer(5))
    async with sessionmaker() as session:
        rows = (await session.execute(select(Payment).order_by(Payment.id))).scalars().all()
    assert [(p.months, p.amount, p.status) for p in rows] == [
        (3, 50_400, PaymentStatus.RECORDED),
        (3, 50_400, PaymentStatus.RECORDED),
    ]
