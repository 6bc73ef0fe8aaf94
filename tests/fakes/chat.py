"""Drive the real engine like a person would, one event at a time.

`Chat` keeps the last question's options so a test can press a button by its
label (as a user sees it) and checks nothing itself: tests assert on replies
and on the database.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import sertakan_data
from domain.eligibility import AgeBounds
from domain.tariff import DEFAULT_TARIFF
from domain.vocabulary import Channel, Language
from handlers.commands import parse_command
from handlers.context import EngineConfig
from handlers.engine import Engine
from handlers.i18n import Catalogs
from handlers.types import Document, EventKind, InboundEvent, Option, Reply
from sertakan_data import shipped
from storage.crypto import NikCipher
from storage.opd_repository import OpdRepository
from tests.fakes.clock import FrozenClock

REPO_ROOT = Path(__file__).resolve().parents[2]
OPD_SEED = shipped(sertakan_data.OPD_SEED)
TEST_KEY = bytes(range(32))
_update_ids = itertools.count(1)

#: Valid identities used across tests.
ASN_NIP = "198503122010011002"  # PNS, born 12 Mar 1985, male
WORKER_NIK = "3201014708900001"  # woman born 7 Aug 1990 (day 47 = 7 + 40)
OTHER_NIK = "1771010101800003"  # man born 1 Jan 1980


def engine_config(**overrides: object) -> EngineConfig:
    from zoneinfo import ZoneInfo

    values: dict[str, object] = {
        "age_bounds": AgeBounds(15, 65),
        "max_workers_per_asn": 5,
        "draft_idle": timedelta(minutes=30),
        "timezone": ZoneInfo("Asia/Jakarta"),
        "default_language": Language.INDONESIAN,
        "tariff": DEFAULT_TARIFF,
    }
    values.update(overrides)
    return EngineConfig(**values)  # type: ignore[arg-type]


def build_engine(
    sessionmaker: async_sessionmaker[AsyncSession],
    clock: FrozenClock,
    config: EngineConfig | None = None,
    *,
    worker_channel: Channel | None = None,
) -> Engine:
    return Engine(
        database=sessionmaker.kw["bind"],
        cipher=NikCipher(TEST_KEY),
        config=config or engine_config(),
        catalogs=Catalogs(),
        clock=clock,
        worker_channel=worker_channel,
    )


async def seed_opds(sessionmaker: async_sessionmaker[AsyncSession], clock: FrozenClock) -> None:
    async with sessionmaker() as session, session.begin():
        await OpdRepository(session).load_csv(OPD_SEED, now=clock())


def _bare(label: str) -> str:
    """A label without its leading emoji and spaces."""
    return re.sub(r"^\W+", "", label.casefold())


class Chat:
    """One person talking to the engine on one channel."""

    def __init__(
        self,
        engine: Engine,
        clock: FrozenClock,
        sender: str = "1001",
        channel: Channel = Channel.TELEGRAM,
        sender_phone: str | None = None,
    ) -> None:
        """`sender_phone`: the number the channel vouches for (WhatsApp: "+" + wa_id)."""
        self.engine = engine
        self.clock = clock
        self.sender = sender
        self.channel = channel
        self.sender_phone = sender_phone
        self.replies: list[Reply] = []
        self.options: tuple[Option, ...] = ()

    @property
    def text(self) -> str:
        """All reply texts of the last event, joined."""
        return "\n".join(r.text for r in self.replies)

    @property
    def question(self) -> Reply:
        return self.replies[-1]

    def labels(self) -> list[str]:
        return [o.label for o in self.options]

    async def _send(self, **fields: object) -> Sequence[Reply]:
        event = InboundEvent(
            channel=self.channel,
            sender_id=self.sender,
            update_id=str(fields.pop("update_id", next(_update_ids))),
            received_at=self.clock(),
            sender_phone=self.sender_phone,
            **fields,  # type: ignore[arg-type]
        )
        self.last_event = event
        self.replies = list(await self.engine.handle(event))
        for reply in self.replies:
            if reply.options:
                self.options = reply.options
        return self.replies

    async def say(self, text: str, **fields: object) -> Sequence[Reply]:
        """Type `text`: a command ("/bayar") or plain text, read as every channel reads it."""
        command = parse_command(text)
        if command is not None:
            return await self._send(
                kind=EventKind.COMMAND,
                text=text,
                command=command.word,
                command_args=command.args,
                **fields,
            )
        return await self._send(kind=EventKind.TEXT, text=text, **fields)

    async def press(self, label_part: str) -> Sequence[Reply]:
        """Press the option of the latest question whose label contains `label_part`."""
        matches = [o for o in self.options if label_part.casefold() in o.label.casefold()]
        if len(matches) > 1:  # "Setuju" vs "Tidak setuju": prefer the label that starts with it
            wanted = label_part.casefold()
            matches = [o for o in matches if _bare(o.label).startswith(wanted)]
        if len(matches) != 1:
            raise AssertionError(f"{label_part!r} matches {len(matches)} of {self.labels()}")
        return await self.press_id(matches[0].id)

    async def press_id(self, option_id: str, **fields: object) -> Sequence[Reply]:
        """Press by option id; `fields` as in `say` (e.g. the channel's `update_id`)."""
        return await self._send(kind=EventKind.CHOICE, choice_id=option_id, **fields)

    async def share_contact(self, phone: str, *, own: bool = True) -> Sequence[Reply]:
        return await self._send(kind=EventKind.CONTACT, contact_phone=phone, contact_is_own=own)

    async def send_document(self, file_name: str, content: bytes | None) -> Sequence[Reply]:
        """Send a file (as a channel does after fetching it); None: too large to fetch."""
        return await self._send(
            kind=EventKind.DOCUMENT,
            file_ref=f"file-{file_name}",
            file_name=file_name,
            file_content=content,
            file_too_large=content is None,
        )

    @property
    def documents(self) -> list[Document]:
        """Files attached to the replies of the last event."""
        return [reply.document for reply in self.replies if reply.document is not None]

    async def replay(self) -> Sequence[Reply]:
        """Send the last event again with the same update id."""
        event = self.last_event
        self.replies = list(await self.engine.handle(event))
        return self.replies

    # -- whole flows ---------------------------------------------------------------

    async def register(
        self,
        nip: str = ASN_NIP,
        name: str = "Budi Santoso",
        opd_query: str = "kesehatan",
        opd_label: str = "Dinas Kesehatan",
        phone: str = "081234567890",
    ) -> None:
        await self.say("/start")
        await self.press("Daftar sebagai ASN")
        await self.press("Setuju")
        await self.say(nip)
        await self.say(name)
        await self.say(opd_query)
        await self.press(opd_label)
        await self.share_contact(phone)
        await self.press("Konfirmasi")

    async def enroll_until_summary(self, nik: str = WORKER_NIK, name: str = "Siti Aminah") -> None:
        await self.say("/daftar")
        await self.press("Bekerja untuk saya")
        await self.press("Asisten rumah tangga")
        await self.say(name)
        await self.say(nik)
        await self.press("Ya, benar")
        await self.say("Bogor")
        await self.say("081298765432")
        await self.say("Jl. Melati No. 5 RT 02/RW 01")
        await self.say("Sukamaju")
        await self.say("Ciawi")
        await self.say("Kabupaten Bogor")
        await self.press("Bulanan")
        await self.press("Desember 2026")
