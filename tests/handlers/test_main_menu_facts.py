"""The main menu reads whether the ASN has a dues-bearing worker and whether the account is
an administrator in one statement, and looks at the dues only when there is something
dues-bearing (stepcost: the menu after every finished flow)."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from handlers import menus
from handlers.context import Context
from handlers.flows.payment import has_dues_to_pay
from tests.fakes.chat import WORKER_NIK, Chat
from tests.fakes.staff import appoint_admin_account
from tests.fakes.workbench import build_office, issue_cards


class CountingDues:
    """`has_dues_to_pay` as the main menu calls it, counted."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, ctx: Context) -> bool:
        self.calls += 1
        return await has_dues_to_pay(ctx)


async def test_the_dues_are_looked_at_only_once_a_worker_bears_dues(
    sessionmaker: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    counting = CountingDues()
    monkeypatch.setattr(menus, "has_dues_to_pay", counting)
    office = await build_office(sessionmaker)
    await office.enroll()  # waits for the PIC: nothing to pay yet
    await office.asn.say("menu")
    assert not any("Bayar iuran" in label for label in office.asn.labels())
    assert counting.calls == 0

    await issue_cards(office, WORKER_NIK)  # active with a KPJ: dues from now on
    await office.asn.say("menu")
    assert any("Bayar iuran" in label for label in office.asn.labels())
    assert counting.calls == 1


async def test_the_administrator_entry_follows_the_appointment(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    await office.asn.say("menu")
    assert not any("Menu administrator" in label for label in office.asn.labels())
    await appoint_admin_account(sessionmaker, office.clock, external_id=office.asn.sender)
    await office.asn.say("menu")
    assert any("Menu administrator" in label for label in office.asn.labels())
    # Not an ASN at all (never registered): the menu still says who is an administrator.
    await appoint_admin_account(sessionmaker, office.clock, external_id="9009")
    stranger = Chat(office.engine, office.clock, sender="9009")
    await stranger.say("menu")
    assert any("Menu administrator" in label for label in stranger.labels())
    assert not any("Bayar iuran" in label for label in stranger.labels())
