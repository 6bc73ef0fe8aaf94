"""One person's WhatsApp messages are applied in the order they were sent, not delivered.

Regression: an ASN typed the village and then the district a second apart;
Meta delivered the district first, in a webhook of its own, and the two were
stored swapped. Over real HTTP, the real journal, processor and engine.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage.models import Worker
from tests.bot.test_whatsapp_e2e import BUDI, Person, make_settings, register, running, seed
from tests.fakes import whatsapp_payloads as wa
from tests.fakes.chat import WORKER_NIK
from tests.fakes.clock import FrozenClock
from tests.fakes.graph_api import FakeGraphServer

HOLD = timedelta(seconds=1)


async def test_village_and_district_delivered_in_reverse_are_not_swapped(
    tmp_path: Path,
    database_url: str,
    graph: FakeGraphServer,
    sessionmaker: async_sessionmaker[AsyncSession],  # empties every table first
) -> None:
    settings = make_settings(tmp_path, database_url, graph)
    await seed(settings)
    clock = FrozenClock()
    # Up to the village question without a hold (each message drained at once) ...
    async with running(settings, graph, clock) as bot:
        budi = Person(bot, BUDI)
        await register(budi)
        await budi.say("daftar")
        await budi.press("Bekerja untuk saya")
        await budi.press("Asisten rumah tangga")
        await budi.say("Siti Aminah")
        await budi.say(WORKER_NIK)
        await budi.press("Ya, benar")
        await budi.say("Bogor")
        await budi.say("081298765432")
        await budi.say("Jl. Melati No. 5 RT 02/RW 01")
        assert "desa" in budi.text.casefold()
    # ... then the same database served by a process with the default-style hold.
    held = settings.model_copy(
        update={"whatsapp": settings.whatsapp.model_copy(update={"order_hold_s": 1.0})}
    )
    async with running(held, graph, clock) as bot:
        budi = Person(bot, BUDI)
        typed_at = clock()
        village = wa.text(BUDI, "Sukamaju", at=typed_at)
        district = wa.text(BUDI, "Ciawi", at=typed_at + timedelta(seconds=1))
        clock.advance(timedelta(seconds=1))
        assert await bot.post(wa.encode(wa.webhook(district))) == 200
        assert await bot.channel.processor.drain_once() == 0  # held: more may be on the way
        clock.advance(timedelta(milliseconds=300))
        assert await bot.post(wa.encode(wa.webhook(village))) == 200
        clock.advance(HOLD - timedelta(milliseconds=1))
        assert await bot.channel.processor.drain_once() == 0  # the hold counts from the newest
        clock.advance(timedelta(milliseconds=1))
        assert await bot.channel.processor.drain_once() == 2
        await bot.channel.replies.drain()
        assert "kabupaten" in budi.text.casefold()  # both applied: the regency is asked
    # The rest as before (no hold: `Person` drains each answer at once).
    async with running(settings, graph, clock) as bot:
        budi = Person(bot, BUDI)
        await budi.say("Kabupaten Bogor")
        await budi.press("Bulanan")
        await budi.press("Desember 2026")
        await budi.press("Kirim ke PIC")
        assert "Dinas Kesehatan belum punya PIC" in budi.text
    async with sessionmaker() as session:
        worker = (await session.execute(select(Worker))).scalar_one()
    assert (worker.village, worker.district) == ("Sukamaju", "Ciawi")
