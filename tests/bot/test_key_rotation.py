"""Issue 14: `sertakan key rotate` while the bot enrolls workers, then `key retire`.

Runs on the session's database (PostgreSQL with TEST_DATABASE_URL). The bot is
a runtime built as `sertakan run` builds it, on a key ring file holding one
key (as every installation from before key rings); the operator's commands
run in their own thread and event loop with their own runtime, as a second
process would.
"""

from __future__ import annotations

import asyncio
import base64
import io
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from bot import cli_keys
from bot.app import Runtime, StartupError, build_runtime, seed_opds_if_empty
from bot.cli import main
from bot.settings import AppSettings, DatabaseSettings, Environment, Settings, TelegramSettings
from domain.vocabulary import Channel
from storage import crypto, key_rotation
from storage.crypto import NikCipher, read_key_ring
from storage.dead_letters import DeadLetters
from storage.models import AuditLog, KeyCheck, Worker
from tests.fakes.chat import OPD_SEED, TEST_KEY, Chat
from tests.fakes.clock import FrozenClock
from tests.storage.test_collective import nik_for
from tests.storage.test_key_ring import encrypted_before_key_rings

#: Workers enrolled before the rotation, and during it (at least; until it ends).
BEFORE = 6
DURING = 6
MAX_DURING = 80


def settings_for(tmp_path: Path, database_url: str, ring_file: Path) -> Settings:
    return Settings(
        app=AppSettings(
            data_dir=tmp_path,
            nik_key=None,
            nik_key_file=ring_file,
            timezone="Asia/Jakarta",
            opd_seed_file=OPD_SEED,
        ),
        database=DatabaseSettings(url=database_url, auto_migrate=False),
        telegram=TelegramSettings(token=None),
    )


def nip_for(index: int) -> str:
    """A distinct valid NIP per index (a man born 12 Mar 1985)."""
    return f"198503122010011{index + 1:03d}"


async def new_asn(runtime: Runtime, clock: FrozenClock, index: int) -> Chat:
    asn = Chat(runtime.engine, clock, sender=str(5000 + index))
    await asn.register(nip=nip_for(index), name="Budi Santoso", phone=f"0812{index:08d}")
    return asn


async def enroll(asn: Chat, nik: str, name: str) -> None:
    await asn.enroll_until_summary(nik=nik, name=name)
    await asn.press("Kirim ke PIC")
    assert "Tersimpan. Pendaftaran" in asn.text


async def told_duplicate(asn: Chat, nik: str) -> bool:
    """The ASN starts enrolling `nik`; True when the bot says it is registered already."""
    await asn.say("/daftar")
    await asn.press("Bekerja untuk saya")
    await asn.press("Asisten rumah tangga")
    await asn.say("Siapa Saja")
    await asn.say(nik)
    duplicate = "sudah terdaftar" in asn.text
    if duplicate:
        await asn.press("Batalkan")
        assert "Batalkan" not in " ".join(asn.labels())
    return duplicate


def as_operator(
    settings: Settings, clock: FrozenClock, work: Callable[[Runtime], Awaitable[int]]
) -> int:
    """`work` on a runtime of its own in a thread and event loop of its own (another process)."""

    async def main() -> int:
        runtime = await build_runtime(settings, clock=clock, migrate=False)
        try:
            return await work(runtime)
        finally:
            await runtime.close()

    return asyncio.run(main())


async def worker_niks(db: AsyncEngine, cipher: NikCipher) -> list[str]:
    async with db.connect() as connection:
        blobs = await connection.scalars(select(Worker.nik_ciphertext).order_by(Worker.id))
        return [cipher.decrypt(bytes(blob)) for blob in blobs]


class Events:
    """What happened in which order, written from both threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.log: list[str] = []

    def add(self, event: str) -> None:
        with self.lock:
            self.log.append(event)


class ProgressOut(io.StringIO):
    """The operator's terminal: every re-encrypted batch's progress line is an event."""

    def __init__(self, events: Events) -> None:
        super().__init__()
        self.events = events

    def write(self, text: str) -> int:
        if "re-encrypted" in text:
            self.events.add("batch")
        return super().write(text)


async def test_rotate_while_enrolling_then_retire_the_old_key(
    tmp_path: Path, database_url: str, db_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Running processes look at the ring file on every encryption here (2 s in production).
    monkeypatch.setattr(crypto, "RING_RECHECK_S", 0.0)
    ring_file = tmp_path / "nik.ring"
    ring_file.write_text(base64.urlsafe_b64encode(TEST_KEY).decode() + "\n")
    settings = settings_for(tmp_path, database_url, ring_file)
    clock = FrozenClock()
    bot = await build_runtime(settings, clock=clock, migrate=False)
    try:
        assert await seed_opds_if_empty(bot) > 0
        # Before: workers of three ASNs, a parked update, a NIK typed into a flow left
        # half-way, and one NIK as versions before key rings wrote it.
        asns = [await new_asn(bot, clock, index) for index in range(3)]
        before = [nik_for(index) for index in range(BEFORE)]
        for index, nik in enumerate(before):
            await enroll(asns[index % 3], nik, "Siti Aminah")
        halfway = await new_asn(bot, clock, 3)
        await halfway.say("/daftar")
        await halfway.press("Bekerja untuk saya")
        await halfway.press("Asisten rumah tangga")
        await halfway.say("Pekerja Setengah")
        await halfway.say(nik_for(99))
        await DeadLetters(bot.sessionmaker, bot.cipher).park(
            channel=Channel.TELEGRAM,
            update_id="77",
            sender_id="42",
            payload='{"text": "3201014708900001"}',
            error_type="OperationalError",
            attempts=5,
            now=clock(),
        )
        async with bot.db.begin() as connection:
            await connection.execute(
                update(Worker)
                .where(
                    Worker.id == select(Worker.id).order_by(Worker.id).limit(1).scalar_subquery()
                )
                .values(
                    nik_ciphertext=encrypted_before_key_rings(
                        TEST_KEY, before[0], b"sertakan:nik:v1"
                    )
                )
            )
        assert set((await key_rotation.census(bot.db, bot.cipher)).keys()) == {1}

        # During: six more ASNs enroll a worker each (and try a NIK enrolled before,
        # and one enrolled during) while the operator rotates in batches of two.
        events = Events()
        during: list[str] = []
        rotation_started = threading.Event()
        rotation_done = threading.Event()
        out = ProgressOut(events)

        async def rotate(runtime: Runtime) -> int:
            rotation_started.set()
            try:
                return await cli_keys.rotate(
                    runtime,
                    new_key=None,
                    stage=False,
                    resume=False,
                    batch_size=2,
                    pause_s=0.01,
                    out=out,
                )
            finally:
                rotation_done.set()

        async def traffic() -> list[bool]:
            """New ASNs enroll a worker each until the rotation is over (at least DURING)."""
            duplicates = []
            while len(during) < DURING or not rotation_done.is_set():
                assert len(during) < MAX_DURING, "the rotation did not end"
                index = len(during)
                asn = await new_asn(bot, clock, 10 + index)
                events.add("step")
                during.append(nik_for(100 + index))
                await enroll(asn, during[-1], "Joko Susilo")
                events.add("step")
                duplicates.append(await told_duplicate(asn, before[index % BEFORE]))
                if index:
                    duplicates.append(await told_duplicate(asn, during[index - 1]))
                if index == 1:
                    # The rotation begins while enrollments keep coming.
                    assert await asyncio.to_thread(rotation_started.wait, 60)
                await asyncio.sleep(0.01)
            return duplicates

        operator = asyncio.to_thread(as_operator, settings, clock, rotate)
        duplicates, status = await asyncio.gather(traffic(), operator)
        assert status == 0, out.getvalue()
        assert all(duplicates) and len(duplicates) == 2 * len(during) - 1
        # The batches and the chats interleaved.
        batches = [i for i, event in enumerate(events.log) if event == "batch"]
        assert len(batches) >= 3
        assert any(event == "step" for event in events.log[batches[0] : batches[-1]])
        assert "every row uses key 2" in out.getvalue()

        # Every NIK still reads, each written once; the bot followed the ring file.
        assert bot.cipher.current_id == 2
        assert sorted(await worker_niks(bot.db, bot.cipher)) == sorted(before + during)
        counts = await key_rotation.census(bot.db, bot.cipher)
        assert set(counts) == {2} and counts[2] >= BEFORE + DURING + 2
        # The flow left half-way goes on with the NIK it re-encrypted.
        await halfway.press("Ya, benar")
        assert "Bogor" not in halfway.text  # asked for the birthplace, NIK accepted

        # An old ciphertext written back (a process that had not reloaded yet):
        # retiring key 1 is refused until a resumed rotation moved it too.
        async with bot.db.begin() as connection:
            await connection.execute(
                update(Worker)
                .where(
                    Worker.id == select(Worker.id).order_by(Worker.id).limit(1).scalar_subquery()
                )
                .values(nik_ciphertext=NikCipher(TEST_KEY).encrypt(before[0]))
            )
        refused = await asyncio.to_thread(
            as_operator, settings, clock, lambda rt: cli_keys.retire(rt, 1, out=io.StringIO())
        )
        assert refused == 1
        assert 1 in read_key_ring(ring_file).keys  # type: ignore[union-attr]

        async def resume(runtime: Runtime) -> int:
            return await cli_keys.rotate(
                runtime, new_key=None, stage=False, resume=True, batch_size=50, out=io.StringIO()
            )

        assert await asyncio.to_thread(as_operator, settings, clock, resume) == 0
        retired = io.StringIO()
        status = await asyncio.to_thread(
            as_operator, settings, clock, lambda rt: cli_keys.retire(rt, 1, out=retired)
        )
        assert status == 0
        assert "key 1" in retired.getvalue() and "retired" in retired.getvalue()
    finally:
        await bot.close()

    # After: the ring holds key 2 only; the database knows key 2 only.
    ring = read_key_ring(ring_file)
    assert ring is not None and set(ring.keys) == {2}
    new_cipher = NikCipher(ring)
    async with db_engine.connect() as connection:
        assert list(await connection.scalars(select(KeyCheck.key_id))) == [new_cipher.key_id]
        actions = list(await connection.scalars(select(AuditLog.action).order_by(AuditLog.id)))
    assert [a for a in actions if a.startswith("key.")] == [
        "key.rotate",
        "key.reencrypt",
        "key.reencrypt",
        "key.retire",
    ]

    # Started with only the new key: every NIK reads and duplicates are still caught.
    clock = FrozenClock()
    restarted = await build_runtime(settings, clock=clock, migrate=False)
    try:
        assert sorted(await worker_niks(restarted.db, restarted.cipher)) == sorted(before + during)
        asn = await new_asn(restarted, clock, 50)
        assert await told_duplicate(asn, before[0])
        assert await told_duplicate(asn, during[-1])
        parked = await DeadLetters(restarted.sessionmaker, restarted.cipher).list()
        assert len(parked) == 1
        payload = await DeadLetters(restarted.sessionmaker, restarted.cipher).payload(parked[0].id)
        assert payload == '{"text": "3201014708900001"}'
    finally:
        await restarted.close()

    # Started with only the old key: refused, it is not this database's key any more.
    old_only = tmp_path / "old.ring"
    old_only.write_text(base64.urlsafe_b64encode(TEST_KEY).decode() + "\n")
    with pytest.raises(StartupError, match="does not match this database"):
        await build_runtime(settings_for(tmp_path, database_url, old_only), migrate=False)


def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ring_file: Path) -> None:
    monkeypatch.delenv("SERTAKAN_NIK_KEY", raising=False)
    monkeypatch.setenv("SERTAKAN_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SERTAKAN_NIK_KEY_FILE", str(ring_file))
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'sertakan.db'}")


def test_a_staged_key_by_the_command_line_then_made_current_and_the_old_retired(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ring_file = tmp_path / "keys" / "nik.ring"
    ring_file.parent.mkdir()
    ring_file.write_text(base64.urlsafe_b64encode(TEST_KEY).decode() + "\n")
    cli_env(monkeypatch, tmp_path, ring_file)
    assert main(["migrate"]) == 0

    assert main(["key", "rotate", "--stage"]) == 0
    staged = read_key_ring(ring_file)
    assert staged is not None and (staged.current, staged.staged) == (1, 2)
    assert "copy the file to every host" in capsys.readouterr().out
    # Staged: read by every process, written by none yet.
    assert NikCipher(staged).nik_key(NikCipher(staged).encrypt("3201014708900001")) == 1
    assert main(["key", "list"]) == 0
    listing = capsys.readouterr().out
    assert "\tcurrent\t" in listing.splitlines()[1] and "\tstaged\t" in listing.splitlines()[2]

    assert main(["key", "retire", "1"]) == 1  # the current key
    assert "current key" in capsys.readouterr().err
    assert main(["key", "rotate"]) == 0
    promoted = read_key_ring(ring_file)
    assert promoted is not None and (promoted.current, promoted.staged) == (2, None)
    assert promoted.keys == staged.keys  # the staged key became current, no third key
    assert "every row uses key 2" in capsys.readouterr().out
    assert main(["key", "retire", "1"]) == 0
    final = read_key_ring(ring_file)
    assert final is not None and set(final.keys) == {2}
    assert final.lookup_key == staged.lookup_key
    assert ring_file.stat().st_mode & 0o777 == 0o600


def test_rotation_refuses_a_key_set_in_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cli_env(monkeypatch, tmp_path, tmp_path / "unused")
    monkeypatch.setenv("SERTAKAN_NIK_KEY", base64.urlsafe_b64encode(TEST_KEY).decode())
    assert main(["key", "rotate"]) == 2
    assert "SERTAKAN_NIK_KEY_FILE" in capsys.readouterr().err
    assert not (tmp_path / "unused").exists()


async def test_production_never_makes_a_key_file_and_names_a_broken_one(tmp_path: Path) -> None:
    ring_file = tmp_path / "keys" / "nik.key"
    url = f"sqlite+aiosqlite:///{tmp_path / 'sertakan.db'}"
    settings = settings_for(tmp_path, url, ring_file)
    production = settings.model_copy(
        update={"app": settings.app.model_copy(update={"env": Environment.PRODUCTION})}
    )
    with pytest.raises(StartupError, match="does not exist"):
        await build_runtime(production)
    assert not ring_file.exists()
    ring_file.parent.mkdir()
    ring_file.write_text("1=" + base64.urlsafe_b64encode(TEST_KEY).decode() + "\n2=oops\n")
    with pytest.raises(StartupError, match=f"the NIK key file {ring_file}: .*32 bytes"):
        await build_runtime(production)
