"""The main menu reads whether the ASN has a dues-bearing worker, whether the account is
an administrator and whether a PIC appointment may be found for it in one statement, and
looks at the dues only when there is something dues-bearing and at the PIC role only when
one may be found (stepcost and e2e: the menu after every finished flow)."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.vocabulary import Channel
from handlers import context, menus
from handlers.context import Context
from handlers.flows.payment import has_dues_to_pay
from storage.audit import Actor
from storage.models import ChannelAccount, Opd, Pic
from storage.roles import PicRole, appoint, pic_for_account
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


class CountingPicLookups:
    """`pic_for_account` as `Context.pic` calls it, counted."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, *args: object, **kwargs: object) -> PicRole | None:
        self.calls += 1
        return await pic_for_account(*args, **kwargs)  # type: ignore[arg-type]


async def test_the_pic_entry_is_looked_up_only_when_an_appointment_may_be_found(
    sessionmaker: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    counting = CountingPicLookups()
    monkeypatch.setattr(context, "pic_for_account", counting)
    office = await build_office(sessionmaker)
    await office.asn.say("menu")  # an ASN, no PIC: the menu's facts say so
    assert not any("Menu PIC" in label for label in office.asn.labels())
    assert counting.calls == 0

    await office.pic.say("menu")  # appointed by Telegram id
    assert any("Menu PIC (Dinas Kesehatan)" in label for label in office.pic.labels())
    assert counting.calls == 1


async def test_a_phone_appointment_is_bound_by_the_first_menu_on_whatsapp(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    office = await build_office(sessionmaker)
    phone = "+6281311112222"
    async with sessionmaker.kw["bind"].begin() as connection:
        opd_id = (
            await connection.execute(select(Opd.id).where(Opd.code == "BKL-DIKBUD"))
        ).scalar_one()
        await appoint(
            connection,
            opd_id=opd_id,
            channel=None,
            external_id=None,
            phone_e164=phone,
            actor=Actor.admin("test-admin"),
            now=office.clock(),
        )
    # The same number typed on Telegram proves nothing: no PIC entry, nothing bound.
    telegram = Chat(office.engine, office.clock, sender="7007")
    await telegram.say("menu")
    assert not any("Menu PIC" in label for label in telegram.labels())
    whatsapp = Chat(
        office.engine,
        office.clock,
        sender=phone.removeprefix("+"),
        channel=Channel.WHATSAPP,
        sender_phone=phone,
    )
    await whatsapp.say("menu")
    assert any("Menu PIC" in label for label in whatsapp.labels())
    async with sessionmaker() as session:
        bound = (await session.execute(select(Pic).where(Pic.phone_e164 == phone))).scalar_one()
        account = await session.get(ChannelAccount, bound.channel_account_id)
    assert account is not None
    assert (account.channel, account.external_id) == (Channel.WHATSAPP, phone.removeprefix("+"))
