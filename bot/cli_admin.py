"""Administrator commands of `sertakan` (PRODUCT 6): PICs, invite codes, coverage, audit log.

    sertakan pic appoint --opd CODE (--telegram-id ID | --phone PHONE)
    sertakan pic remove PIC_ID
    sertakan pic list [--opd CODE]
    sertakan invite create --opd CODE [--days N] [--bot-username NAME]
    sertakan coverage [--csv FILE]
    sertakan audit list [--opd CODE] [--limit N]
    sertakan worker erase --phone PHONE [--worker ID] [--yes]
    sertakan admin appoint (--telegram-id ID | --whatsapp PHONE | --console NAME)
    sertakan admin remove ADMIN_ID / sertakan admin list / sertakan admin unstaffed

`bot.cli` adds these with `add_parsers` and hands a parsed command to
`dispatch`. Each command runs in one transaction; every change is written with
its audit entry, the actor being the operating-system login of whoever runs it.
Messages here are for the administrator, in English; errors go to stderr with
exit status 1.
"""

from __future__ import annotations

import argparse
import csv
import getpass
import json
import sys
from collections.abc import Sequence
from datetime import date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from bot.app import Runtime
from domain.dues import PaidStanding
from domain.local_time import format_local, local_date
from domain.phone import PhoneError, display_phone, parse_mobile
from domain.vocabulary import Channel, SponsorshipStatus
from storage import admins, roles, worker_side
from storage.audit import Actor, recent
from storage.coverage import CoverageRow, coverage, coverage_total
from storage.models import Opd
from storage.opd_repository import OpdRepository

COMMANDS = frozenset({"pic", "invite", "coverage", "audit", "worker", "admin"})
#: Columns of the coverage report, as in the CSV header.
COVERAGE_COLUMNS = (
    "opd_code",
    "opd_name",
    "asn_registered",
    "asn_sponsoring",
    *(status.value for status in SponsorshipStatus),
    "workers",
    *(standing.value for standing in PaidStanding),
)
#: The number of columns before the paid-until distribution.
_COVERAGE_STATUS_COLUMNS = 5 + len(SponsorshipStatus)
#: The same columns, named to fit a terminal (the CSV keeps the exact status names).
COVERAGE_TABLE_HEADERS = (
    "OPD",
    "name",
    "ASN",
    "sponsoring",
    "waiting",
    "returned",
    "accepted",
    "submitted",
    "active",
    "card",
    "lapsed",
    "ended",
    "workers",
)
#: The paid-until distribution's table: the dues-bearing sponsorships ("paying") by standing.
PAID_TABLE_HEADERS = ("OPD", "name", "paying", "ahead", "current", "behind1", "behind2", "behind3+")
_TABLE_NAME_WIDTH = 32
_MAX_INVITE_DAYS = 90


class _CommandError(Exception):
    """Ends the command with its message on stderr and exit status 1."""


def _positive_int(maximum: int | None = None) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < 1 or (maximum is not None and value > maximum):
            bound = f"1 to {maximum}" if maximum is not None else "at least 1"
            raise argparse.ArgumentTypeError(f"must be {bound}, not {value}")
        return value

    return parse


def _telegram_id(text: str) -> str:
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a Telegram user id (digits)")
    return str(int(text))


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the administrator commands to `sertakan`'s subcommands."""
    pic = sub.add_parser("pic", help="appoint, remove and list the PICs of the OPDs")
    pic_sub = pic.add_subparsers(dest="pic_command", required=True)
    appoint = pic_sub.add_parser(
        "appoint",
        help="make someone PIC of an OPD",
        description="Appoint a PIC by Telegram user id, or by mobile number: the number "
        "becomes PIC when it writes to the bot from WhatsApp (a phone typed on Telegram "
        "proves nothing: appoint Telegram PICs by id or send them an invite code).",
    )
    appoint.add_argument("--opd", required=True, metavar="CODE", help="the OPD's code")
    who = appoint.add_mutually_exclusive_group(required=True)
    who.add_argument("--telegram-id", type=_telegram_id, metavar="ID", help="Telegram user id")
    who.add_argument("--phone", metavar="PHONE", help="mobile number: 08..., 628... or +628...")
    remove = pic_sub.add_parser("remove", help="end a PIC appointment (kept in the audit log)")
    remove.add_argument("pic_id", type=_positive_int(), metavar="PIC_ID", help="from `pic list`")
    listing = pic_sub.add_parser("list", help="list the current PICs")
    listing.add_argument("--opd", metavar="CODE", help="only this OPD")

    invite = sub.add_parser("invite", help="one-time codes that make whoever redeems them PIC")
    invite_sub = invite.add_subparsers(dest="invite_command", required=True)
    create = invite_sub.add_parser(
        "create",
        help="create a one-time invite code for an OPD",
        description="Print a one-time code: on Telegram the PIC opens the link, on WhatsApp "
        "or the console they send the code to the bot.",
    )
    create.add_argument("--opd", required=True, metavar="CODE", help="the OPD's code")
    create.add_argument(
        "--days",
        type=_positive_int(_MAX_INVITE_DAYS),
        default=7,
        metavar="N",
        help=f"valid for N days (default 7, at most {_MAX_INVITE_DAYS})",
    )
    create.add_argument(
        "--bot-username",
        metavar="NAME",
        help="the Telegram bot's username, to print the t.me link",
    )

    report = sub.add_parser(
        "coverage",
        help=(
            "coverage per OPD: ASN registered and sponsoring, workers by status, "
            "paid-until distribution"
        ),
    )
    report.add_argument(
        "--csv", type=Path, metavar="FILE", help="also write the report as CSV ('-': stdout)"
    )

    worker = sub.add_parser("worker", help="a worker's data on request (PRODUCT 7)")
    worker_sub = worker.add_subparsers(dest="worker_command", required=True)
    erase = worker_sub.add_parser(
        "erase",
        help="end a worker's enrollments and erase their personal data",
        description="What a worker's HAPUS on WhatsApp does, for a request made another "
        "way (a letter, the counter): the enrollments end, name, NIK, birth date, phone "
        "and address are overwritten, every notice, journal row and parked update quoting "
        "them is scrubbed, the ASN and the OPD's PICs are told. Without --yes it only shows "
        "what would be erased. A phone shared by several workers needs --worker: only that "
        "worker is erased.",
    )
    erase.add_argument("--phone", required=True, metavar="PHONE", help="the worker's mobile")
    erase.add_argument(
        "--worker",
        type=_positive_int(),
        metavar="ID",
        help="the worker's id, as listed, when the phone belongs to several workers",
    )
    erase.add_argument("--yes", action="store_true", help="erase (otherwise: show only)")

    _add_admin_parsers(sub)

    audit = sub.add_parser("audit", help="the audit log of PIC and administrator actions")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    audit_list = audit_sub.add_parser("list", help="the newest entries first")
    audit_list.add_argument("--opd", metavar="CODE", help="only entries about this OPD")
    audit_list.add_argument(
        "--limit", type=_positive_int(), default=50, metavar="N", help="at most N (default 50)"
    )


def _add_admin_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    admin = sub.add_parser(
        "admin",
        help="administrator chat accounts, and the OPDs that wait for a PIC",
        description="An administrator's chat account gets the daily digest of OPDs with "
        "enrollments waiting and no PIC, a notice when someone needed such an OPD's PIC, "
        "and the questions ('Tanya PIC') sent to such OPDs, which it can answer in the chat.",
    )
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)
    appoint = admin_sub.add_parser("appoint", help="make a chat account an administrator")
    who = appoint.add_mutually_exclusive_group(required=True)
    who.add_argument("--telegram-id", type=_telegram_id, metavar="ID", help="Telegram user id")
    who.add_argument(
        "--whatsapp", metavar="PHONE", help="WhatsApp number: 08..., 628... or +628..."
    )
    who.add_argument("--console", metavar="NAME", help="a console user (sertakan console --user)")
    remove = admin_sub.add_parser("remove", help="end an administrator appointment")
    remove.add_argument(
        "admin_id", type=_positive_int(), metavar="ADMIN_ID", help="from `admin list`"
    )
    admin_sub.add_parser("list", help="list the administrator chat accounts")
    admin_sub.add_parser(
        "unstaffed", help="OPDs without a reachable PIC that have enrollments or questions waiting"
    )


async def dispatch(args: argparse.Namespace, runtime: Runtime) -> int | None:
    """Run an administrator command; None when `args.command` is not one of them."""
    command = getattr(args, "command", None)
    if command not in COMMANDS:
        return None
    try:
        async with runtime.sessionmaker() as session, session.begin():
            return await _run(command, args, runtime, session)
    except (_CommandError, roles.RoleError) as error:
        print(f"sertakan: {error}", file=sys.stderr)
        return 1


async def _run(
    command: str, args: argparse.Namespace, runtime: Runtime, session: AsyncSession
) -> int:
    connection = await session.connection()
    now = runtime.clock()
    zone = runtime.engine.config.timezone
    if command == "pic":
        if args.pic_command == "appoint":
            return await _appoint(args, session, connection, now)
        if args.pic_command == "remove":
            role = await roles.remove(connection, pic_id=args.pic_id, actor=_admin(), now=now)
            print(f"PIC {args.pic_id} removed from {role.opd_code} ({role.opd_name})")
            return 0
        opd = await _opd(session, args.opd) if args.opd else None
        return _print_pics(await roles.list_pics(connection, opd_id=opd.id if opd else None), zone)
    if command == "invite":
        return await _invite(args, runtime, session, connection, now, zone)
    if command == "coverage":
        today = local_date(now, zone)
        rows = await coverage(connection, today=today, calendar=runtime.calendar)
        return _print_coverage(rows, args.csv, today)
    if command == "worker":
        return await _erase_worker(args, runtime, session, now)
    if command == "admin":
        return await _admin_command(args, connection, now, zone)
    opd = await _opd(session, args.opd) if args.opd else None
    return await _print_audit(
        connection, opd_id=opd.id if opd else None, limit=args.limit, zone=zone
    )


async def _erase_worker(
    args: argparse.Namespace, runtime: Runtime, session: AsyncSession, now: datetime
) -> int:
    parsed = parse_mobile(args.phone)
    if isinstance(parsed, PhoneError):
        raise _CommandError(f"{args.phone!r} is not a mobile number ({parsed.problem.value})")
    workers = await worker_side.workers_for_phone(session, parsed.e164)
    if not workers:
        raise _CommandError(f"no worker with the phone {display_phone(parsed.e164)}")
    records = await worker_side.records_for_phone(session, parsed.e164)
    for worker in workers:
        own = [s for s in records if s.worker_id == worker.id]
        print(
            f"worker {worker.id}: {worker.full_name} ({worker.nik_masked}), "
            f"{display_phone(parsed.e164)}: "
            f"{len(own)} enrollment(s)"
        )
        for sponsorship in own:
            print(f"  #{sponsorship.id} {sponsorship.status.value} KPJ {sponsorship.kpj or '-'}")
    if args.worker is not None:
        if args.worker not in {w.id for w in workers}:
            raise _CommandError(
                f"worker {args.worker} does not have the phone {display_phone(parsed.e164)}"
            )
        worker_id = int(args.worker)
    elif len(workers) > 1:
        # Erasing "the phone" would take every worker on it: one of them must be named.
        raise _CommandError(
            f"the phone {display_phone(parsed.e164)} belongs to {len(workers)} workers: "
            "choose one with --worker ID (nothing changed)"
        )
    else:
        worker_id = workers[0].id
    if not args.yes:
        print("nothing changed: add --yes to erase")
        return 0
    erasure = await worker_side.erase_worker(
        session, phone_e164=parsed.e164, worker_id=worker_id, actor=_admin(), now=now
    )
    assert erasure is not None
    await runtime.engine.notices.worker_erased(await session.connection(), erasure, now=now)
    print(
        f"worker {worker_id} erased; {len(erasure.ended)} enrollment(s) ended, "
        "the ASN and PICs will be told"
    )
    return 0


async def _admin_command(
    args: argparse.Namespace, connection: AsyncConnection, now: datetime, zone: tzinfo
) -> int:
    if args.admin_command == "appoint":
        if args.telegram_id is not None:
            channel, external_id = Channel.TELEGRAM, str(args.telegram_id)
            who = f"Telegram user {external_id}"
        elif args.whatsapp is not None:
            parsed = parse_mobile(args.whatsapp)
            if isinstance(parsed, PhoneError):
                raise _CommandError(
                    f"{args.whatsapp!r} is not a mobile number ({parsed.problem.value})"
                )
            # WhatsApp addresses a person by the number's digits (their wa_id).
            channel, external_id = Channel.WHATSAPP, parsed.e164.removeprefix("+")
            who = f"WhatsApp {display_phone(parsed.e164)}"
        else:
            name = str(args.console).strip()
            if not name:
                raise _CommandError("a console user needs a name")
            channel, external_id = Channel.CONSOLE, name
            who = f"console user {name}"
        admin_id, new = await admins.appoint_admin(
            connection, channel=channel, external_id=external_id, actor=_admin(), now=now
        )
        if not new:
            print(f"{who} is already administrator {admin_id}; nothing changed")
            return 0
        print(f"administrator {admin_id}: {who}")
        print(
            "They get the daily digest of OPDs without a PIC, and the questions sent to such "
            "OPDs; 'admin' in the chat opens their menu."
        )
        return 0
    if args.admin_command == "remove":
        await admins.remove_admin(connection, admin_id=args.admin_id, actor=_admin(), now=now)
        print(f"administrator {args.admin_id} removed")
        return 0
    if args.admin_command == "list":
        listings = await admins.list_admins(connection)
        if not listings:
            print("no administrator chat accounts (appoint one: sertakan admin appoint)")
            return 0
        rows = [
            [
                str(item.admin_id),
                f"{item.channel.value}:{item.external_id}",
                item.name or "-",
                format_local(item.appointed_at, zone),
                item.appointed_by,
            ]
            for item in listings
        ]
        print(_table(["id", "account", "name", "appointed", "by"], rows, numeric={0}))
        return 0
    unstaffed = await admins.unstaffed_opds(connection)
    if not unstaffed:
        print("every OPD with enrollments waiting or open questions has a reachable PIC")
        return 0
    rows = [
        [
            item.code,
            _shorten(item.name),
            str(item.waiting),
            format_local(item.waiting_since, zone) if item.waiting_since else "-",
            str(item.open_questions),
        ]
        for item in unstaffed
    ]
    print(_table(["OPD", "name", "waiting", "oldest", "questions"], rows, numeric={2, 4}))
    print("Appoint a PIC: sertakan pic appoint --opd CODE ... or sertakan invite create --opd CODE")
    return 0


def _admin() -> Actor:
    try:
        return Actor.admin(getpass.getuser())
    except (OSError, KeyError):  # no login name in a bare container
        return Actor.admin("unknown")


async def _opd(session: AsyncSession, code: str) -> Opd:
    """The OPD with this code, or a _CommandError naming close matches."""
    repository = OpdRepository(session)
    opd = await repository.get_by_code(code)
    if opd is not None:
        return opd
    suggestions: list[Opd] = []
    for match in [*await repository.search(code, limit=5), *await repository.closest(code)]:
        if match not in suggestions:
            suggestions.append(match)
    message = f"there is no OPD with the code {code.strip().upper()!r}"
    if suggestions:
        names = ", ".join(f"{opd.code} ({opd.name})" for opd in suggestions[:5])
        message += f"; did you mean: {names}?"
    else:
        message += "; see the OPD list (sertakan opd load) for the codes"
    raise _CommandError(message)


async def _appoint(
    args: argparse.Namespace, session: AsyncSession, connection: AsyncConnection, now: datetime
) -> int:
    opd = await _opd(session, args.opd)
    channel: Channel | None = None
    external_id: str | None = None
    phone: str | None = None
    if args.telegram_id is not None:
        channel, external_id = Channel.TELEGRAM, args.telegram_id
        who = f"Telegram user {external_id}"
    else:
        parsed = parse_mobile(args.phone)
        if isinstance(parsed, PhoneError):
            raise _CommandError(f"{args.phone!r} is not a mobile number ({parsed.problem.value})")
        phone = parsed.e164
        who = f"phone {display_phone(phone)}"
    before = {pic.pic_id for pic in await roles.list_pics(connection, opd_id=opd.id)}
    pic_id = await roles.appoint(
        connection,
        opd_id=opd.id,
        channel=channel,
        external_id=external_id,
        phone_e164=phone,
        actor=_admin(),
        now=now,
    )
    if pic_id in before:
        print(f"{who} is already PIC {pic_id} of {opd.code} ({opd.name}); nothing changed")
        return 0
    print(f"PIC {pic_id} appointed for {opd.code} ({opd.name}): {who}")
    if phone is not None:
        print(
            "The appointment takes effect when this number writes to the bot on WhatsApp. "
            "For a PIC on Telegram, appoint by --telegram-id or create an invite code."
        )
    return 0


def _print_pics(pics: Sequence[roles.PicListing], zone: tzinfo) -> int:
    if not pics:
        print("no PICs")
        return 0
    rows = []
    for pic in pics:
        if pic.channel is not None:
            who = f"{pic.channel.value}:{pic.external_id}"
        else:
            who = f"{display_phone(pic.phone_e164 or '')} (waiting for this number)"
        rows.append(
            [
                str(pic.pic_id),
                pic.opd_code,
                who,
                pic.display_name or "-",
                format_local(pic.appointed_at, zone),
                pic.appointed_by,
            ]
        )
    print(_table(["id", "OPD", "account", "name", "appointed", "by"], rows, numeric={0}))
    return 0


async def _invite(
    args: argparse.Namespace,
    runtime: Runtime,
    session: AsyncSession,
    connection: AsyncConnection,
    now: datetime,
    zone: tzinfo,
) -> int:
    opd = await _opd(session, args.opd)
    valid_for = timedelta(days=args.days)
    code = await roles.create_invite(
        connection, opd_id=opd.id, actor=_admin(), now=now, valid_for=valid_for
    )
    print(f"Invite code for {opd.code} ({opd.name}): {code}")
    print(f"Valid until {format_local(now + valid_for, zone)}, for one person.")
    username = args.bot_username or _configured_bot_username(runtime)
    if username:
        print(f"Telegram: {roles.invite_deep_link(username, code)}")
    else:
        print("Telegram: give --bot-username to print the t.me link.")
    print(f"WhatsApp or console: send the code {code} to the bot.")
    return 0


def _configured_bot_username(runtime: Runtime) -> str | None:
    value = runtime.settings.telegram.bot_username.strip().lstrip("@")
    return value or None


def _coverage_cells(row: CoverageRow) -> list[str]:
    return [
        row.opd_code,
        row.opd_name,
        str(row.asn_registered),
        str(row.asn_sponsoring),
        *(str(row.by_status[status]) for status in SponsorshipStatus),
        str(row.workers),
        *(str(row.paid[standing]) for standing in PaidStanding),
    ]


def _print_coverage(rows: list[CoverageRow], csv_path: Path | None, today: date) -> int:
    with_total = [*rows, coverage_total(rows)]
    lines = [_coverage_cells(row) for row in with_total]
    if csv_path is not None and str(csv_path) == "-":
        _write_csv(sys.stdout, lines)
        return 0
    split = _COVERAGE_STATUS_COLUMNS
    shown = [[line[0], _shorten(line[1]), *line[2:split]] for line in lines]
    numeric = set(range(2, split))
    print(_table(list(COVERAGE_TABLE_HEADERS), shown, numeric=numeric, rule_before_last=True))
    print(
        "waiting: waiting_for_pic, card: card_handed_over; ASN sponsoring: with an open sponsorship"
    )
    print()
    paid = [
        [row.opd_code, _shorten(row.opd_name), str(sum(row.paid.values())), *line[split:]]
        for row, line in zip(with_total, lines, strict=True)
    ]
    numeric = set(range(2, len(PAID_TABLE_HEADERS)))
    print(f"Paid-until on {today.isoformat()} of the dues-bearing workers (active, card):")
    print(_table(list(PAID_TABLE_HEADERS), paid, numeric=numeric, rule_before_last=True))
    print(
        "ahead: paid beyond this month; current: nothing overdue; behindN: N months overdue "
        "(2: at risk; 3+: lapses at the next reminder run)"
    )
    if csv_path is not None:
        try:
            with csv_path.open("w", encoding="utf-8", newline="") as file:
                _write_csv(file, lines)
        except OSError as error:
            raise _CommandError(f"cannot write {csv_path}: {error.strerror}") from error
        print(f"CSV written to {csv_path} ({len(rows)} OPDs and a total row)")
    return 0


def _write_csv(file: TextIO, lines: list[list[str]]) -> None:
    writer = csv.writer(file)
    writer.writerow(COVERAGE_COLUMNS)
    writer.writerows(lines)


async def _print_audit(
    connection: AsyncConnection, *, opd_id: int | None, limit: int, zone: tzinfo
) -> int:
    entries = await recent(connection, limit=limit, opd_id=opd_id)
    if not entries:
        print("no audit entries")
        return 0
    codes = dict((await connection.execute(select(Opd.id, Opd.code))).tuples().all())
    rows = [
        [
            str(entry.id),
            format_local(entry.at, zone, seconds=True),
            f"{entry.actor_type}:{entry.actor}",
            entry.action,
            f"{entry.record_type}:{entry.record_id or '-'}",
            codes.get(entry.opd_id, "-") if entry.opd_id is not None else "-",
            json.dumps(entry.details, ensure_ascii=False, sort_keys=True) if entry.details else "",
        ]
        for entry in entries
    ]
    headers = ["id", "at", "actor", "action", "record", "OPD", "details"]
    print(_table(headers, rows, numeric={0}))
    return 0


def _shorten(text: str, width: int = _TABLE_NAME_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(
    headers: list[str],
    rows: list[list[str]],
    *,
    numeric: set[int] | frozenset[int] = frozenset(),
    rule_before_last: bool = False,
) -> str:
    """Rows as aligned columns under a header and a rule; numeric columns right-aligned."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        padded = (
            cell.rjust(width) if index in numeric else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * width for width in widths)
    body = [line(row) for row in rows]
    if rule_before_last and body:
        body.insert(len(body) - 1, rule)
    return "\n".join([line(headers), rule, *body])
