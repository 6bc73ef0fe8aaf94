"""Administrators and named staff for tests: what `sertakan admin appoint` and a
Telegram profile name give the real system."""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.vocabulary import Channel
from storage.admins import appoint_admin
from storage.audit import Actor
from storage.models import ChannelAccount
from tests.fakes.clock import FrozenClock

ADMIN_ID = "9001"


async def appoint_admin_account(
    sessionmaker: async_sessionmaker[AsyncSession],
    clock: FrozenClock,
    external_id: str = ADMIN_ID,
    channel: Channel = Channel.TELEGRAM,
) -> int:
    """Make the chat account an administrator, as the CLI does; its administrator id."""
    async with sessionmaker.kw["bind"].begin() as connection:
        admin_id, _ = await appoint_admin(
            connection,
            channel=channel,
            external_id=external_id,
            actor=Actor.admin("test-admin"),
            now=clock(),
        )
    return admin_id


async def name_account(
    sessionmaker: async_sessionmaker[AsyncSession],
    external_id: str,
    name: str,
    channel: Channel = Channel.TELEGRAM,
) -> None:
    """Give the account the profile name its platform reports (Telegram's first/last name)."""
    async with sessionmaker.kw["bind"].begin() as connection:
        await connection.execute(
            update(ChannelAccount)
            .where(ChannelAccount.channel == channel, ChannelAccount.external_id == external_id)
            .values(display_name=name)
        )
