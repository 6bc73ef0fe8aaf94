"""Fixtures for flow tests: the real engine on the test database with the OPD seed."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.fakes.chat import Chat, build_engine, seed_opds
from tests.fakes.clock import FrozenClock


@pytest.fixture
async def guest(sessionmaker: async_sessionmaker[AsyncSession]) -> Chat:
    """A Telegram user who has not registered yet."""
    clock = FrozenClock()
    await seed_opds(sessionmaker, clock)
    return Chat(build_engine(sessionmaker, clock), clock)


@pytest.fixture
async def asn(guest: Chat) -> Chat:
    """A registered ASN of Dinas Kesehatan."""
    await guest.register()
    return guest


async def to_nik_step(chat: Chat) -> None:
    """Start an enrollment and answer up to the NIK question."""
    await chat.say("/daftar")
    await chat.press("Bekerja untuk saya")
    await chat.press("Asisten rumah tangga")
    await chat.say("Siti Aminah")
    assert "NIK Siti Aminah" in chat.question.text
