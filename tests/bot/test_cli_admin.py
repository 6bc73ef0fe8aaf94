"""The administrator commands, parsed as `sertakan` parses them and run on the test database."""

from __future__ import annotations

import argparse
import csv
import getpass
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.app import Runtime
from bot.cli import build_parser
from bot.cli_admin import COVERAGE_COLUMNS, COVERAGE_TABLE_HEADERS, PAID_TABLE_HEADERS, dispatch
from domain.vocabulary import Channel, SponsorshipStatus
from storage.models import (
    AuditLog,
    ChannelAccount,
    InviteCode,
    Opd,
    Outbox,
    Pic,
    Sponsorship,
    Worker,
)
from storage.roles import PicRole, redeem_invite
from tests.fakes.admin import Admin
from tests.fakes.chat import OTHER_NIK, Chat
from tests.fakes.clock import FrozenClock
from tests.fakes.runtime import open_runtime
from tests.storage.test_coverage import asn_in, sponsor
from tests.storage.test_roles import add_account


def parser() -> argparse.ArgumentParser:
    return build_parser()


@pytest.fixture
async def runtime(
    tmp_path: Path,
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],  # empties every table first
) -> AsyncIterator[Runtime]:
    async with open_runtime(tmp_path, database_url, seed_opds=True) as runtime:
        yield runtime


@pytest.fixture
def admin(runtime: Runtime, capsys: pytest.CaptureFixture[str]) -> Admin:
    return Admin(runtime, capsys)


async def pics(runtime: Runtime) -> list[tuple[str, str | None, str | None, bool]]:
    """(OPD code, telegram id, phone, current) of every appointment."""
    statement = (
        select(Opd.code, ChannelAccount.external_id, Pic.phone_e164, Pic.removed_at.is_(None))
        .join(Opd, Opd.id == Pic.opd_id)
        .outerjoin(ChannelAccount, ChannelAccount.id == Pic.channel_account_id)
        .order_by(Pic.id)
    )
    async with runtime.db.connect() as connection:
        return [tuple(row) for row in await connection.execute(statement)]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--help"], ["pic", "invite", "coverage", "audit"]),
        (["pic", "appoint", "--help"], ["--opd CODE", "--telegram-id ID", "--phone PHONE"]),
        (["pic", "remove", "--help"], ["PIC_ID"]),
        (["invite", "create", "--help"], ["--days N", "--bot-username NAME"]),
        (["coverage", "--help"], ["--csv FILE"]),
        (["audit", "list", "--help"], ["--opd CODE", "--limit N"]),
        (["worker", "erase", "--help"], ["--phone PHONE", "--worker ID", "--yes"]),
        (
            ["admin", "appoint", "--help"],
            ["--telegram-id ID", "--whatsapp PHONE", "--console NAME"],
        ),
        (["admin", "remove", "--help"], ["ADMIN_ID"]),
    ],
)
def test_every_command_has_help(
    argv: list[str], expected: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parser().parse_args(argv)
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert all(word in out for word in expected), out


@pytest.mark.parametrize(
    "argv",
    [
        ["pic", "appoint", "--opd", "BKL-DINKES"],
        ["pic", "appoint", "--opd", "BKL-DINKES", "--telegram-id", "1", "--phone", "0812"],
        ["pic", "appoint", "--opd", "BKL-DINKES", "--telegram-id", "@budi"],
        ["pic", "remove", "zero"],
        ["invite", "create", "--opd", "BKL-DINKES", "--days", "0"],
        ["audit", "list", "--limit", "-3"],
    ],
)
def test_malformed_commands_are_refused_by_the_parser(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parser().parse_args(argv)
    assert exited.value.code == 2
    assert "error:" in capsys.readouterr().err


async def test_other_commands_are_not_ours(runtime: Runtime) -> None:
    assert await dispatch(argparse.Namespace(command="migrate"), runtime) is None
    assert await dispatch(argparse.Namespace(command=None), runtime) is None


async def test_appoint_by_telegram_id_list_and_remove(admin: Admin) -> None:
    assert await admin.run("pic", "appoint", "--opd", "bkl-dinkes", "--telegram-id", "12345") == 0
    assert admin.out.startswith("PIC ")
    pic_id = admin.out.split()[1]
    assert admin.out.strip().endswith("BKL-DINKES (Dinas Kesehatan): Telegram user 12345")
    assert await pics(admin.runtime) == [("BKL-DINKES", "12345", None, True)]

    assert await admin.run("pic", "appoint", "--opd", "BKL-DINKES", "--telegram-id", "12345") == 0
    assert f"already PIC {pic_id} of BKL-DINKES" in admin.out

    assert await admin.run("pic", "appoint", "--opd", "BKL-BAPPEDA", "--telegram-id", "12345") == 1
    assert "already PIC of BKL-DINKES" in admin.err
    assert admin.out == ""

    assert await admin.run("pic", "list") == 0
    header, _rule, row = admin.out.splitlines()
    assert header.split()[:3] == ["id", "OPD", "account"]
    assert row.split()[:4] == [pic_id, "BKL-DINKES", "telegram:12345", "-"]
    assert row.endswith(f"2026-11-21 10:00 WIB  admin:{getpass.getuser()}")

    assert await admin.run("pic", "remove", pic_id) == 0
    assert admin.out.strip() == f"PIC {pic_id} removed from BKL-DINKES (Dinas Kesehatan)"
    assert await admin.run("pic", "list") == 0
    assert admin.out.strip() == "no PICs"
    assert await admin.run("pic", "remove", pic_id) == 1
    assert f"PIC {pic_id} was already removed" in admin.err
    assert await pics(admin.runtime) == [("BKL-DINKES", "12345", None, False)]


async def test_appoint_by_phone_accepts_local_spellings(admin: Admin) -> None:
    assert (
        await admin.run("pic", "appoint", "--opd", "BKL-DINKES", "--phone", "0812-3456-7890") == 0
    )
    assert "phone 0812-3456-7890" in admin.out
    assert "WhatsApp" in admin.out
    assert await pics(admin.runtime) == [("BKL-DINKES", None, "+6281234567890", True)]
    assert await admin.run("pic", "list", "--opd", "BKL-DINKES") == 0
    assert "0812-3456-7890 (waiting for this number)" in admin.out
    assert await admin.run("pic", "list", "--opd", "BKL-BAPPEDA") == 0
    assert admin.out.strip() == "no PICs"

    assert await admin.run("pic", "appoint", "--opd", "BKL-DINKES", "--phone", "12") == 1
    assert "'12' is not a mobile number" in admin.err


async def test_an_unknown_opd_code_suggests_close_matches(admin: Admin) -> None:
    assert await admin.run("pic", "appoint", "--opd", "DINKES", "--telegram-id", "1") == 1
    assert "no OPD with the code 'DINKES'" in admin.err
    assert "did you mean: BKL-DINKES (Dinas Kesehatan)" in admin.err
    assert await admin.run("invite", "create", "--opd", "zzzzzz") == 1
    assert "no OPD with the code 'ZZZZZZ'" in admin.err
    assert "did you mean" not in admin.err
    assert await pics(admin.runtime) == []


async def test_an_inactive_opd_gets_no_pic(admin: Admin) -> None:
    async with admin.runtime.db.begin() as connection:
        await connection.execute(update(Opd).where(Opd.code == "BKL-DINKES").values(active=False))
    assert await admin.run("invite", "create", "--opd", "BKL-DINKES") == 1
    assert "BKL-DINKES (Dinas Kesehatan) is inactive" in admin.err


async def test_invite_create_prints_a_code_that_works(admin: Admin) -> None:
    assert (
        await admin.run(
            "invite",
            "create",
            "--opd",
            "BKL-DINKES",
            "--days",
            "3",
            "--bot-username",
            "@SertakanBot",
        )
        == 0
    )
    lines = admin.out.splitlines()
    code = lines[0].rsplit(" ", 1)[1]
    assert lines[0] == f"Invite code for BKL-DINKES (Dinas Kesehatan): {code}"
    assert lines[1] == "Valid until 2026-11-24 10:00 WIB, for one person."
    assert lines[2] == f"Telegram: https://t.me/SertakanBot?start={code}"
    assert code in lines[3]

    async with admin.runtime.db.begin() as connection:
        account = await add_account(connection, "777", Channel.TELEGRAM)
        role = await redeem_invite(
            connection, code=code.lower(), account_id=account, now=admin.runtime.clock()
        )
    assert isinstance(role, PicRole) and role.opd_code == "BKL-DINKES"

    assert await admin.run("invite", "create", "--opd", "BKL-DINKES") == 0
    assert "give --bot-username" in admin.out
    async with admin.runtime.db.connect() as connection:
        assert len((await connection.execute(select(InviteCode.id))).all()) == 2


async def test_coverage_table_and_csv(admin: Admin, tmp_path: Path) -> None:
    async with admin.runtime.db.begin() as connection:
        ids = dict((await connection.execute(select(Opd.code, Opd.id))).tuples().all())
        dinkes, bappeda = ids["BKL-DINKES"], ids["BKL-BAPPEDA"]
        sponsor_id = await asn_in(connection, dinkes)
        await sponsor(connection, asn_id=sponsor_id, opd_id=dinkes, status=SponsorshipStatus.ACTIVE)
        await sponsor(
            connection, asn_id=sponsor_id, opd_id=dinkes, status=SponsorshipStatus.WAITING_FOR_PIC
        )
        await asn_in(connection, dinkes)
        await asn_in(connection, bappeda)
        opd_count = len((await connection.execute(select(Opd.id))).all())

    target = tmp_path / "coverage.csv"
    assert await admin.run("coverage", "--csv", str(target)) == 0
    lines = admin.out.splitlines()
    assert lines[0].split() == list(COVERAGE_TABLE_HEADERS)
    status_table = lines[: lines.index("")]
    dinkes_line = next(line for line in status_table if line.startswith("BKL-DINKES "))
    # asn_registered, asn_sponsoring, the eight statuses, workers
    assert dinkes_line.split()[-11:] == ["2", "1", "1", "0", "0", "0", "1", "0", "0", "0", "2"]
    assert status_table[-3].startswith("--")
    assert status_table[-2].split()[:1] == ["TOTAL"]
    assert status_table[-2].split()[-11:] == ["3", "1", "1", "0", "0", "0", "1", "0", "0", "0", "2"]
    # Columns line up: every number ends where its header ends.
    header_end = lines[0].index("ASN") + len("ASN")
    assert dinkes_line[header_end - 1] == "2" and dinkes_line[header_end] == " "
    # The paid-until distribution: the one active sponsorship (first month December,
    # the clock in November) has nothing due yet.
    paid_table = lines[lines.index("") + 1 :]
    assert paid_table[0].startswith("Paid-until on 2026-")
    assert paid_table[1].split() == list(PAID_TABLE_HEADERS)
    paid_dinkes = next(line for line in paid_table if line.startswith("BKL-DINKES "))
    assert paid_dinkes.split()[-6:] == ["1", "0", "1", "0", "0", "0"]
    assert lines[-1] == f"CSV written to {target} ({opd_count} OPDs and a total row)"

    with target.open(encoding="utf-8", newline="") as file:
        records = list(csv.DictReader(file))
    assert list(records[0]) == list(COVERAGE_COLUMNS)
    assert len(records) == opd_count + 1
    by_code = {record["opd_code"]: record for record in records}
    assert by_code["BKL-DINKES"]["opd_name"] == "Dinas Kesehatan"
    assert (by_code["BKL-DINKES"]["asn_registered"], by_code["BKL-DINKES"]["active"]) == ("2", "1")
    assert by_code["BKL-BAPPEDA"]["asn_sponsoring"] == "0"
    assert by_code["TOTAL"]["workers"] == "2"
    assert (by_code["BKL-DINKES"]["up_to_date"], by_code["BKL-DINKES"]["arrears_3"]) == ("1", "0")

    assert await admin.run("coverage", "--csv", "-") == 0
    assert list(csv.reader(admin.out.splitlines()))[-1][0] == "TOTAL"

    assert await admin.run("coverage", "--csv", str(tmp_path / "missing" / "x.csv")) == 1
    assert "cannot write" in admin.err


async def test_audit_list_shows_who_did_what(admin: Admin) -> None:
    assert await admin.run("audit", "list") == 0
    assert admin.out.strip() == "no audit entries"
    await admin.run("pic", "appoint", "--opd", "BKL-DINKES", "--telegram-id", "12345")
    await admin.run("invite", "create", "--opd", "BKL-BAPPEDA")
    assert await admin.run("audit", "list") == 0
    header, _rule, newest, oldest = admin.out.splitlines()
    assert header.split() == ["id", "at", "actor", "action", "record", "OPD", "details"]
    user = getpass.getuser()
    assert newest.split()[4:8] == [
        f"admin:{user}",
        "invite.create",
        newest.split()[6],
        "BKL-BAPPEDA",
    ]
    assert newest.split()[6].startswith("invite_code:")
    assert oldest.split()[4:8] == [f"admin:{user}", "pic.appoint", oldest.split()[6], "BKL-DINKES"]
    assert '"external_id": "12345"' in oldest

    assert await admin.run("audit", "list", "--opd", "BKL-DINKES") == 0
    assert [line.split()[5] for line in admin.out.splitlines()[2:]] == ["pic.appoint"]
    assert await admin.run("audit", "list", "--limit", "1") == 0
    assert [line.split()[5] for line in admin.out.splitlines()[2:]] == ["invite.create"]
    async with admin.runtime.db.connect() as connection:
        assert len((await connection.execute(select(AuditLog.id))).all()) == 2


async def test_audit_list_shows_local_time_with_the_zone(admin: Admin) -> None:
    # 17:30 UTC is 00:30 WIB the next day: the operator reads the province's clock.
    clock = admin.runtime.clock
    assert isinstance(clock, FrozenClock)
    clock.now = datetime(2026, 12, 1, 17, 30, 9, tzinfo=UTC)
    await admin.run("invite", "create", "--opd", "BKL-BAPPEDA")
    assert await admin.run("audit", "list") == 0
    _header, _rule, entry = admin.out.splitlines()
    assert entry.split()[1:4] == ["2026-12-02", "00:30:09", "WIB"]


async def test_worker_erase_shows_first_then_erases_and_tells_the_asn(
    tmp_path: Path,
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    capsys: pytest.CaptureFixture[str],
) -> None:
    clock = FrozenClock()
    async with open_runtime(tmp_path, database_url, clock=clock, seed_opds=True) as runtime:
        asn = Chat(runtime.engine, clock)
        await asn.register()
        await asn.enroll_until_summary()
        await asn.press("Kirim ke PIC")
        admin = Admin(runtime, capsys)

        assert await admin.run("worker", "erase", "--phone", "0812-9876-5432") == 0
        assert "Siti Aminah (3201********0001), 0812-9876-5432: 1 enrollment(s)" in admin.out
        assert admin.out.startswith("worker ")
        assert "nothing changed" in admin.out
        async with sessionmaker() as session:
            assert (await session.execute(select(Worker.full_name))).scalar_one() == "Siti Aminah"

        assert await admin.run("worker", "erase", "--phone", "081298765432", "--yes") == 0
        assert " erased; 1 enrollment(s) ended" in admin.out
        async with sessionmaker() as session:
            worker = (await session.execute(select(Worker))).scalar_one()
            status = (await session.execute(select(Sponsorship.status))).scalar_one()
            told = (
                (await session.execute(select(Outbox).where(Outbox.kind == "worker_erased")))
                .scalars()
                .all()
            )
            actions = (
                await session.execute(
                    select(AuditLog.actor_type, AuditLog.action).where(
                        AuditLog.action == "worker.erased"
                    )
                )
            ).all()
        assert (worker.full_name, worker.phone_e164, worker.erased_at) == ("-", None, clock())
        assert status is SponsorshipStatus.ENDED
        assert [(n.recipient, "Siti Aminah" in n.body) for n in told] == [("1001", False)]
        assert [tuple(a) for a in actions] == [("admin", "worker.erased")]

        assert await admin.run("worker", "erase", "--phone", "081298765432") == 1
        assert "no worker with the phone 0812-9876-5432" in admin.err
        assert await admin.run("worker", "erase", "--phone", "12") == 1
        assert "is not a mobile number" in admin.err


async def test_worker_erase_on_a_shared_phone_needs_the_worker_and_erases_only_that_one(
    tmp_path: Path,
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    capsys: pytest.CaptureFixture[str],
) -> None:
    clock = FrozenClock()
    async with open_runtime(tmp_path, database_url, clock=clock, seed_opds=True) as runtime:
        asn = Chat(runtime.engine, clock)
        await asn.register()
        # One family phone typed for two workers.
        await asn.enroll_until_summary()
        await asn.press("Kirim ke PIC")
        await asn.enroll_until_summary(nik=OTHER_NIK, name="Joko Susilo")
        await asn.press("Kirim ke PIC")
        admin = Admin(runtime, capsys)

        async with sessionmaker() as session:
            siti, joko = (await session.execute(select(Worker.id).order_by(Worker.id))).scalars()
        assert await admin.run("worker", "erase", "--phone", "081298765432", "--yes") == 1
        assert "belongs to 2 workers: choose one with --worker ID" in admin.err
        assert f"worker {siti}: Siti Aminah" in admin.out
        assert f"worker {joko}: Joko Susilo" in admin.out
        argv = ("worker", "erase", "--phone", "081298765432", "--worker", str(joko + 7), "--yes")
        assert await admin.run(*argv) == 1
        assert f"worker {joko + 7} does not have the phone" in admin.err

        argv = ("worker", "erase", "--phone", "081298765432", "--worker", str(joko), "--yes")
        assert await admin.run(*argv) == 0
        assert f"worker {joko} erased; 1 enrollment(s) ended" in admin.out
        async with sessionmaker() as session:
            names = (await session.execute(select(Worker.full_name).order_by(Worker.id))).all()
            statuses = (
                await session.execute(
                    select(Sponsorship.worker_id, Sponsorship.status).order_by(Sponsorship.id)
                )
            ).all()
        assert [n for (n,) in names] == ["Siti Aminah", "-"]
        assert [tuple(s) for s in statuses] == [
            (siti, SponsorshipStatus.WAITING_FOR_PIC),
            (joko, SponsorshipStatus.ENDED),
        ]


async def test_admin_appoint_list_remove_audited(admin: Admin) -> None:
    assert await admin.run("admin", "list") == 0
    assert "no administrator chat accounts" in admin.out
    assert await admin.run("admin", "appoint", "--telegram-id", "9001") == 0
    assert admin.out.startswith("administrator ")
    admin_id = admin.out.split()[1].rstrip(":")
    assert "Telegram user 9001" in admin.out
    assert await admin.run("admin", "appoint", "--telegram-id", "9001") == 0
    assert f"already administrator {admin_id}; nothing changed" in admin.out
    assert await admin.run("admin", "appoint", "--whatsapp", "0812-3456-7890") == 0
    assert "WhatsApp 0812-3456-7890" in admin.out
    assert await admin.run("admin", "appoint", "--whatsapp", "12") == 1
    assert "'12' is not a mobile number" in admin.err
    assert await admin.run("admin", "appoint", "--console", "admin") == 0
    assert "console user admin" in admin.out

    assert await admin.run("admin", "list") == 0
    _header, _rule, *rows = admin.out.splitlines()
    assert [row.split()[:2] for row in rows] == [
        [admin_id, "telegram:9001"],
        [str(int(admin_id) + 1), "whatsapp:6281234567890"],
        [str(int(admin_id) + 2), "console:admin"],
    ]
    assert await admin.run("admin", "remove", admin_id) == 0
    assert await admin.run("admin", "remove", admin_id) == 1
    assert f"no current administrator with id {admin_id}" in admin.err
    async with admin.runtime.db.connect() as connection:
        actions = (
            await connection.execute(
                select(AuditLog.action, AuditLog.actor_type, AuditLog.record_id)
                .where(AuditLog.action.like("admin.%"))
                .order_by(AuditLog.id)
            )
        ).all()
    assert [tuple(row) for row in actions] == [
        ("admin.appoint", "admin", admin_id),
        ("admin.appoint", "admin", str(int(admin_id) + 1)),
        ("admin.appoint", "admin", str(int(admin_id) + 2)),
        ("admin.remove", "admin", admin_id),
    ]


async def test_admin_unstaffed_lists_opds_waiting_without_a_pic(
    admin: Admin, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    assert await admin.run("admin", "unstaffed") == 0
    assert "every OPD with enrollments waiting or open questions has a reachable PIC" in admin.out
    budi = Chat(admin.runtime.engine, admin.runtime.clock)  # type: ignore[arg-type]
    await budi.register()
    await budi.enroll_until_summary()
    await budi.press("Kirim ke PIC")
    assert await admin.run("admin", "unstaffed") == 0
    header, _rule, row, hint = admin.out.splitlines()
    assert header.split() == ["OPD", "name", "waiting", "oldest", "questions"]
    assert row.split()[:3] == ["BKL-DINKES", "Dinas", "Kesehatan"]
    assert row.split()[3] == "1" and row.endswith("WIB          0")
    assert "sertakan invite create" in hint
    # A PIC by phone who never wrote is no one to reach: still listed.
    await admin.run("pic", "appoint", "--opd", "BKL-DINKES", "--phone", "0812-3456-7890")
    assert await admin.run("admin", "unstaffed") == 0
    assert "BKL-DINKES" in admin.out
    await admin.run("pic", "appoint", "--opd", "BKL-DINKES", "--telegram-id", "2001")
    assert await admin.run("admin", "unstaffed") == 0
    assert "every OPD" in admin.out
