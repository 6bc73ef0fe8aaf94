"""PIC appointments, phone binding, removal, listing and invite codes, on the real database."""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import event, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.vocabulary import Channel, EmploymentType, Language, Sex
from storage.audit import Actor, recent
from storage.models import Asn, AuditLog, ChannelAccount, InviteCode, Opd, Pic
from storage.roles import (
    INVITE_ALPHABET,
    InviteProblem,
    PicRole,
    RoleError,
    appoint,
    create_invite,
    invite_deep_link,
    list_pics,
    normalize_invite_code,
    pic_for_account,
    redeem_invite,
    remove,
)

NOW = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
ADMIN = Actor.admin("operator")
PHONE = "+6281234567890"
_nips = itertools.count(1)


async def add_opd(connection: AsyncConnection, code: str, name: str, *, active: bool = True) -> int:
    result = await connection.execute(
        insert(Opd).values(
            code=code, name=name, search_name=name.lower(), active=active, created_at=NOW
        )
    )
    assert result.inserted_primary_key is not None
    return int(result.inserted_primary_key[0])


async def add_account(
    connection: AsyncConnection,
    external_id: str,
    channel: Channel = Channel.TELEGRAM,
    display_name: str | None = None,
) -> int:
    result = await connection.execute(
        insert(ChannelAccount).values(
            channel=channel,
            external_id=external_id,
            language=Language.INDONESIAN,
            display_name=display_name,
            created_at=NOW,
        )
    )
    assert result.inserted_primary_key is not None
    return int(result.inserted_primary_key[0])


async def add_asn(
    connection: AsyncConnection,
    *,
    opd_id: int,
    account_id: int,
    phone: str = PHONE,
    name: str = "Budi Santoso",
) -> int:
    result = await connection.execute(
        insert(Asn).values(
            nip=f"1985031220100110{next(_nips):02d}"[-18:],
            employment_type=EmploymentType.PNS,
            full_name=name,
            birth_date=date(1985, 3, 12),
            sex=Sex.MALE,
            opd_id=opd_id,
            phone_e164=phone,
            channel_account_id=account_id,
            registered_at=NOW,
        )
    )
    assert result.inserted_primary_key is not None
    return int(result.inserted_primary_key[0])


@pytest.fixture
async def connection(db_engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One open transaction, as the engine or the CLI gives these functions."""
    async with db_engine.begin() as connection:
        yield connection


@pytest.fixture
async def opds(connection: AsyncConnection) -> dict[str, int]:
    return {
        "DINKES": await add_opd(connection, "DINKES", "Dinas Kesehatan"),
        "BAPPEDA": await add_opd(connection, "BAPPEDA", "Badan Perencanaan Pembangunan Daerah"),
        "OLD": await add_opd(connection, "OLD", "Dinas Lama", active=False),
    }


async def audit_actions(connection: AsyncConnection) -> list[tuple[str, str, str, str | None]]:
    entries = await recent(connection, limit=100)
    return [(e.action, e.actor_type, e.actor, e.record_id) for e in reversed(entries)]


async def test_appoint_by_telegram_id_creates_the_account_and_the_role(
    connection: AsyncConnection, opds: dict[str, int]
) -> None:
    pic_id = await appoint(
        connection,
        opd_id=opds["DINKES"],
        channel=Channel.TELEGRAM,
        external_id="12345",
        phone_e164=None,
        actor=ADMIN,
        now=NOW,
    )
    account = (
        await connection.execute(
            select(ChannelAccount).where(ChannelAccount.external_id == "12345")
        )
    ).one()
    assert (account.channel, account.language) == (Channel.TELEGRAM, Language.INDONESIAN)
    role = await pic_for_account(connection, account.id, now=NOW)
    assert role == PicRole(pic_id, opds["DINKES"], "Dinas Kesehatan", "DINKES")
    pic = (await connection.execute(select(Pic).where(Pic.id == pic_id))).one()
    assert (pic.appointed_by, pic.appointed_at) == ("admin:operator", NOW)
    entries = await recent(connection)
    assert [(e.action, e.actor, e.record_id, e.opd_id) for e in entries] == [
        ("pic.appoint", "operator", str(pic_id), opds["DINKES"])
    ]
    assert entries[0].details == {
        "channel": "telegram",
        "external_id": "12345",
        "opd_code": "DINKES",
    }


async def test_appointing_again_for_the_same_opd_is_idempotent(
    connection: AsyncConnection, opds: dict[str, int]
) -> None:
    first = await appoint(
        connection,
        opd_id=opds["DINKES"],
        channel=Channel.TELEGRAM,
        external_id="12345",
        phone_e164=None,
        actor=ADMIN,
        now=NOW,
    )
    again = await appoint(
        connection,
        opd_id=opds["DINKES"],
        channel=Channel.TELEGRAM,
        external_id="12345",
        phone_e164=None,
        actor=ADMIN,
        now=NOW + timedelta(hours=1),
    )
    assert again == first
    assert (await connection.execute(select(func.count(Pic.id)))).scalar_one() == 1
    assert [a[0] for a in await audit_actions(connection)] == ["pic.appoint"]


async def test_an_account_serves_one_opd(connection: AsyncConnection, opds: dict[str, int]) -> None:
    await appoint(
        connection,
        opd_id=opds["DINKES"],
        channel=Channel.TELEGRAM,
        external_id="12345",
        phone_e164=None,
        actor=ADMIN,
        now=NOW,
    )
    with pytest.raises(RoleError, match=r"already PIC of DINKES \(Dinas Kesehatan\)"):
        await appoint(
            connection,
            opd_id=opds["BAPPEDA"],
            channel=Channel.TELEGRAM,
            external_id="12345",
            phone_e164=None,
            actor=ADMIN,
            now=NOW,
        )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"channel": None, "external_id": None, "phone_e164": None}, "either"),
        ({"channel": Channel.TELEGRAM, "external_id": "1", "phone_e164": PHONE}, "either"),
        ({"channel": Channel.TELEGRAM, "external_id": "", "phone_e164": None}, "both"),
        ({"channel": None, "external_id": None, "phone_e164": "081234567890"}, "E.164"),
    ],
)
async def test_appoint_needs_exactly_one_kind_of_person(
    connection: AsyncConnection, opds: dict[str, int], fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(RoleError, match=message):
        await appoint(connection, opd_id=opds["DINKES"], actor=ADMIN, now=NOW, **fields)


async def test_appoint_refuses_unknown_and_inactive_opds(
    connection: AsyncConnection, opds: dict[str, int]
) -> None:
    fields: dict[str, Any] = {"channel": None, "external_id": None, "phone_e164": PHONE}
    with pytest.raises(RoleError, match=r"OPD OLD .* is inactive"):
        await appoint(connection, opd_id=opds["OLD"], actor=ADMIN, now=NOW, **fields)
    with pytest.raises(RoleError, match="no OPD with id 999999"):
        await appoint(connection, opd_id=999999, actor=ADMIN, now=NOW, **fields)
    assert (await connection.execute(select(func.count(Pic.id)))).scalar_one() == 0


async def test_a_phone_appointment_binds_to_the_whatsapp_account_of_that_number(
    connection: AsyncConnection, opds: dict[str, int]
) -> None:
    pic_id = await appoint(
        connection,
        opd_id=opds["DINKES"],
        channel=None,
        external_id=None,
        phone_e164=PHONE,
        actor=ADMIN,
        now=NOW,
    )
    stranger = await add_account(connection, "6289999999999", Channel.WHATSAPP)
    assert await pic_for_account(connection, stranger, now=NOW) is None
    whatsapp = await add_account(connection, PHONE.removeprefix("+"), Channel.WHATSAPP)
    role = await pic_for_account(connection, whatsapp, now=NOW)
    assert role == PicRole(pic_id, opds["DINKES"], "Dinas Kesehatan", "DINKES")
    bound = (await connection.execute(select(Pic).where(Pic.id == pic_id))).one()
    assert (bound.channel_account_id, bound.phone_e164) == (whatsapp, PHONE)
    assert await pic_for_account(connection, whatsapp, now=NOW) == role
    assert await audit_actions(connection) == [
        ("pic.appoint", "admin", "operator", str(pic_id)),
        ("pic.bind", "account", str(whatsapp), str(pic_id)),
    ]


async def test_a_phone_appointment_binds_only_to_the_whatsapp_account_of_that_number(
    connection: AsyncConnection, opds: dict[str, int]
) -> None:
    pic_id = await appoint(
        connection,
        opd_id=opds["DINKES"],
        channel=None,
        external_id=None,
        phone_e164=PHONE,
        actor=ADMIN,
        now=NOW,
    )
    unregistered = await add_account(connection, "555")
    assert await pic_for_account(connection, unregistered, now=NOW) is None
    # An ASN registered on Telegram with that phone typed in proves nothing.
    telegram = await add_account(connection, "777")
    await add_asn(connection, opd_id=opds["DINKES"], account_id=telegram)
    assert await pic_for_account(connection, telegram, now=NOW) is None
    # The number writing from WhatsApp does (the platform vouches for it), once.
    whatsapp = await add_account(connection, PHONE.removeprefix("+"), Channel.WHATSAPP)
    role = await pic_for_account(connection, whatsapp, now=NOW)
    assert role is not None and role.pic_id == pic_id
    assert await pic_for_account(connection, telegram, now=NOW) is None


async def test_an_account_with_its_own_appointment_does_not_claim_a_phone_appointment(
    connection: AsyncConnection, opds: dict[str, int]
) -> None:
    whatsapp = PHONE.removeprefix("+")
    own = await appoint(
        connection,
        opd_id=opds["BAPPEDA"],
        channel=Channel.WHATSAPP,
        external_id=whatsapp,
        phone_e164=None,
        actor=ADMIN,
        now=NOW,
    )
    # Appointing the number for another OPD is refused: the account proving it serves BAPPEDA.
    with pytest.raises(RoleError, match="already PIC of BAPPEDA"):
        await appoint(
            connection,
            opd_id=opds["DINKES"],
            channel=None,
            external_id=None,
            phone_e164=PHONE,
            actor=ADMIN,
            now=NOW,
        )
    # ...and for the same OPD it is that appointment.
    same = await appoint(
        connection,
        opd_id=opds["BAPPEDA"],
        channel=None,
        external_id=None,
        phone_e164=PHONE,
        actor=ADMIN,
        now=NOW,
    )
    assert same == own


async def test_a_phone_serves_one_opd(connection: AsyncConnection, opds: dict[str, int]) -> None:
    first = await appoint(
        connection,
        opd_id=opds["DINKES"],
        channel=None,
        external_id=None,
        phone_e164=PHONE,
        actor=ADMIN,
        now=NOW,
    )
    again = await appoint(
        connection,
        opd_id=opds["DINKES"],
        channel=None,
        external_id=None,
        phone_e164=PHONE,
        actor=ADMIN,
        now=NOW,
    )
    assert again == first
    with pytest.raises(RoleError, match=rf"phone \{PHONE} is already PIC of DINKES"):
        await appoint(
            connection,
            opd_id=opds["BAPPEDA"],
            channel=None,
            external_id=None,
            phone_e164=PHONE,
            actor=ADMIN,
            now=NOW,
        )


async def test_the_common_case_is_one_statement(
    db_engine: AsyncEngine, connection: AsyncConnection, opds: dict[str, int]
) -> None:
    await appoint(
        connection,
        opd_id=opds["DINKES"],
        channel=None,
        external_id=None,
        phone_e164="+6281111111111",
        actor=ADMIN,
        now=NOW,
    )
    asn_account = await add_account(connection, "888")
    await add_asn(connection, opd_id=opds["DINKES"], account_id=asn_account)
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(db_engine.sync_engine, "before_cursor_execute", count)
    try:
        assert await pic_for_account(connection, asn_account, now=NOW) is None
    finally:
        event.remove(db_engine.sync_engine, "before_cursor_execute", count)
    assert len(statements) == 1


async def test_remove_ends_the_role_and_allows_a_new_appointment(
    connection: AsyncConnection, opds: dict[str, int]
) -> None:
    pic_id = await appoint(
        connection,
        opd_id=opds["DINKES"],
        channel=Channel.TELEGRAM,
        external_id="12345",
        phone_e164=None,
        actor=ADMIN,
        now=NOW,
    )
    account = (
        await connection.execute(
            select(ChannelAccount.id).where(ChannelAccount.external_id == "12345")
        )
    ).scalar_one()
    later = NOW + timedelta(days=1)
    role = await remove(connection, pic_id=pic_id, actor=Actor.admin("other"), now=later)
    assert role.opd_code == "DINKES"
    assert await pic_for_account(connection, account, now=later) is None
    row = (await connection.execute(select(Pic).where(Pic.id == pic_id))).one()
    assert (row.removed_at, row.removed_by) == (later, "admin:other")
    with pytest.raises(RoleError, match=f"PIC {pic_id} was already removed on 2026-11-22"):
        await remove(connection, pic_id=pic_id, actor=ADMIN, now=later)
    with pytest.raises(RoleError, match="no PIC with id 999999"):
        await remove(connection, pic_id=999999, actor=ADMIN, now=later)
    # The account is free to serve another OPD now.
    new_id = await appoint(
        connection,
        opd_id=opds["BAPPEDA"],
        channel=Channel.TELEGRAM,
        external_id="12345",
        phone_e164=None,
        actor=ADMIN,
        now=later,
    )
    assert new_id != pic_id
    assert [a[0] for a in await audit_actions(connection)] == [
        "pic.appoint",
        "pic.remove",
        "pic.appoint",
    ]


async def test_list_pics_shows_current_appointments_with_names(
    connection: AsyncConnection, opds: dict[str, int]
) -> None:
    asn_account = await add_account(connection, "2001", display_name="budi_tg")
    await add_asn(connection, opd_id=opds["DINKES"], account_id=asn_account, phone="+628222")
    await add_account(connection, "2002", display_name="ani_tg")
    by_id = await appoint(
        connection,
        opd_id=opds["DINKES"],
        channel=Channel.TELEGRAM,
        external_id="2001",
        phone_e164=None,
        actor=ADMIN,
        now=NOW,
    )
    other = await appoint(
        connection,
        opd_id=opds["BAPPEDA"],
        channel=Channel.TELEGRAM,
        external_id="2002",
        phone_e164=None,
        actor=ADMIN,
        now=NOW,
    )
    by_phone = await appoint(
        connection,
        opd_id=opds["DINKES"],
        channel=None,
        external_id=None,
        phone_e164=PHONE,
        actor=ADMIN,
        now=NOW,
    )
    gone = await appoint(
        connection,
        opd_id=opds["DINKES"],
        channel=Channel.TELEGRAM,
        external_id="2003",
        phone_e164=None,
        actor=ADMIN,
        now=NOW,
    )
    await remove(connection, pic_id=gone, actor=ADMIN, now=NOW)

    listed = await list_pics(connection)
    assert [(p.pic_id, p.opd_code) for p in listed] == [
        (other, "BAPPEDA"),
        (by_id, "DINKES"),
        (by_phone, "DINKES"),
    ]
    dinkes = await list_pics(connection, opd_id=opds["DINKES"])
    assert [
        (p.channel, p.external_id, p.phone_e164, p.display_name, p.appointed_by) for p in dinkes
    ] == [
        (Channel.TELEGRAM, "2001", None, "Budi Santoso", "admin:operator"),
        (None, None, PHONE, None, "admin:operator"),
    ]
    assert listed[0].display_name == "ani_tg"


async def test_an_invite_makes_its_redeemer_pic_once(
    connection: AsyncConnection, opds: dict[str, int]
) -> None:
    code = await create_invite(connection, opd_id=opds["DINKES"], actor=ADMIN, now=NOW)
    assert re.fullmatch(f"PIC-[{INVITE_ALPHABET}]{{8}}", code)
    invite = (await connection.execute(select(InviteCode))).one()
    assert (invite.code, invite.expires_at, invite.used_at) == (code, NOW + timedelta(days=7), None)

    first = await add_account(connection, "3001")
    role = await redeem_invite(connection, code=code, account_id=first, now=NOW)
    assert isinstance(role, PicRole) and role.opd_code == "DINKES"
    assert await pic_for_account(connection, first, now=NOW) == role
    pic = (await connection.execute(select(Pic).where(Pic.id == role.pic_id))).one()
    assert pic.appointed_by == f"invite:{invite.id}"
    used = (await connection.execute(select(InviteCode))).one()
    assert (used.used_at, used.used_by_account_id) == (NOW, first)

    # The same person opening the link again keeps the role; anybody else finds it used.
    assert await redeem_invite(connection, code=code, account_id=first, now=NOW) == role
    second = await add_account(connection, "3002")
    assert await redeem_invite(connection, code=code, account_id=second, now=NOW) is (
        InviteProblem.USED
    )
    assert await pic_for_account(connection, second, now=NOW) is None
    assert await audit_actions(connection) == [
        ("invite.create", "admin", "operator", str(invite.id)),
        ("invite.redeem", "account", str(first), str(invite.id)),
        ("invite.failed", "account", str(second), None),  # counted against guessing
    ]


async def test_typed_codes_ignore_case_spaces_and_the_prefix(
    connection: AsyncConnection, opds: dict[str, int]
) -> None:
    accounts = [await add_account(connection, str(4000 + n)) for n in range(3)]
    spellings: tuple[Callable[[str], str], ...] = (
        lambda code: code.lower(),
        lambda code: " " + code[4:8] + " " + code[8:].lower() + " ",
        lambda code: "pic " + code[4:],
    )
    for account, spell in zip(accounts, spellings, strict=True):
        code = await create_invite(connection, opd_id=opds["DINKES"], actor=ADMIN, now=NOW)
        role = await redeem_invite(connection, code=spell(code), account_id=account, now=NOW)
        assert isinstance(role, PicRole), spell(code)


@given(st.text(alphabet=INVITE_ALPHABET, min_size=8, max_size=8), st.sampled_from(["", "PIC-"]))
def test_normalize_invite_code_round_trips(body: str, prefix: str) -> None:
    assert normalize_invite_code(prefix + body) == "PIC-" + body
    assert (
        normalize_invite_code(f" {prefix.lower()}{body[:4].lower()} {body[4:]} ") == "PIC-" + body
    )


@pytest.mark.parametrize(
    "typed", ["", "PIC-", "PIC-ABCDEFG", "PIC-ABCDEFGHJ", "PIC-ABCDEFG0", "Ya"]
)
def test_text_that_cannot_be_a_code_is_unknown_without_lookup(typed: str) -> None:
    assert normalize_invite_code(typed) is None


async def test_unknown_and_expired_codes(connection: AsyncConnection, opds: dict[str, int]) -> None:
    account = await add_account(connection, "5001")
    assert (
        await redeem_invite(connection, code="PIC-ABCDEFGH", account_id=account, now=NOW)
        is InviteProblem.UNKNOWN
    )
    assert (
        await redeem_invite(connection, code="hello", account_id=account, now=NOW)
        is InviteProblem.UNKNOWN
    )
    code = await create_invite(
        connection, opd_id=opds["DINKES"], actor=ADMIN, now=NOW, valid_for=timedelta(days=2)
    )
    deadline = NOW + timedelta(days=2)
    assert (
        await redeem_invite(connection, code=code, account_id=account, now=deadline)
        is InviteProblem.EXPIRED
    )
    before = await redeem_invite(
        connection, code=code, account_id=account, now=deadline - timedelta(seconds=1)
    )
    assert isinstance(before, PicRole)


async def test_a_pic_redeeming_an_invite_keeps_their_role_and_leaves_the_code(
    connection: AsyncConnection, opds: dict[str, int]
) -> None:
    await appoint(
        connection,
        opd_id=opds["DINKES"],
        channel=Channel.TELEGRAM,
        external_id="6001",
        phone_e164=None,
        actor=ADMIN,
        now=NOW,
    )
    pic_account = (
        await connection.execute(
            select(ChannelAccount.id).where(ChannelAccount.external_id == "6001")
        )
    ).scalar_one()
    same_opd = await create_invite(connection, opd_id=opds["DINKES"], actor=ADMIN, now=NOW)
    other_opd = await create_invite(connection, opd_id=opds["BAPPEDA"], actor=ADMIN, now=NOW)

    role = await redeem_invite(connection, code=same_opd, account_id=pic_account, now=NOW)
    assert isinstance(role, PicRole) and role.opd_code == "DINKES"
    assert (
        await redeem_invite(connection, code=other_opd, account_id=pic_account, now=NOW)
        is InviteProblem.ALREADY_PIC_ELSEWHERE
    )
    unused = (await connection.execute(select(InviteCode.used_at))).scalars().all()
    assert unused == [None, None]
    # Both codes still work for the people they were meant for.
    newcomer = await add_account(connection, "6002")
    assert isinstance(
        await redeem_invite(connection, code=same_opd, account_id=newcomer, now=NOW), PicRole
    )


async def test_create_invite_checks_its_input(
    connection: AsyncConnection, opds: dict[str, int]
) -> None:
    with pytest.raises(ValueError, match="valid for some time"):
        await create_invite(
            connection, opd_id=opds["DINKES"], actor=ADMIN, now=NOW, valid_for=timedelta(0)
        )
    with pytest.raises(RoleError, match="inactive"):
        await create_invite(connection, opd_id=opds["OLD"], actor=ADMIN, now=NOW)
    assert (await connection.execute(select(func.count(AuditLog.id)))).scalar_one() == 0


def test_deep_link() -> None:
    assert invite_deep_link("@SertakanBot", "PIC-ABCD2345") == (
        "https://t.me/SertakanBot?start=PIC-ABCD2345"
    )
    assert invite_deep_link("sertakan_bot", "PIC-X") == "https://t.me/sertakan_bot?start=PIC-X"
