"""`sertakan web` and `sertakan leader`: web sign-in links for administrators, and
program leaders (read-only, every OPD) appointed like administrators (issue 13)."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TYPE_CHECKING

from bot.cli_admin import _positive_int, _telegram_id
from domain.local_time import format_local
from domain.phone import PhoneError, parse_mobile
from domain.vocabulary import Channel
from handlers.web_link import SIGN_IN_PATH
from storage.audit import Actor
from storage.roles import RoleError
from storage.web_access import (
    LINK_TTL,
    Principal,
    WebRole,
    appoint_leader,
    issue_link,
    list_leaders,
    remove_leader,
)

if TYPE_CHECKING:
    from bot.app import Runtime

COMMANDS = frozenset({"web", "leader"})


def login() -> str:
    """The operator's login name, written as the administrator in the audit log."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in a bare container
        return "unknown"


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    web = sub.add_parser("web", help="the web workbench")
    web_sub = web.add_subparsers(dest="web_command", required=True)
    link = web_sub.add_parser("link", help="print a one-time sign-in link (10 minutes)")
    link.add_argument(
        "--admin", action="store_true", required=True, help="for the administrator running this"
    )
    leader = sub.add_parser(
        "leader",
        help="program leaders: read every OPD's web pages, change nothing",
        description="A program leader signs in to the web pages with a link the bot sends "
        "them (/web) and reads every OPD's figures; they cannot change anything.",
    )
    leader_sub = leader.add_subparsers(dest="leader_command", required=True)
    appoint = leader_sub.add_parser("appoint", help="make a chat account a program leader")
    who = appoint.add_mutually_exclusive_group(required=True)
    who.add_argument("--telegram-id", type=_telegram_id, metavar="ID", help="Telegram user id")
    who.add_argument("--whatsapp", metavar="PHONE", help="WhatsApp number: 08..., +628...")
    who.add_argument("--console", metavar="NAME", help="a console user (sertakan console --user)")
    remove = leader_sub.add_parser("remove", help="end a program leader appointment")
    remove.add_argument("leader_id", type=_positive_int(), metavar="LEADER_ID")
    leader_sub.add_parser("list", help="list the program leaders")


async def dispatch(args: argparse.Namespace, runtime: Runtime) -> int | None:
    command = getattr(args, "command", None)
    if command not in COMMANDS:
        return None
    actor = Actor.admin(login())
    now = runtime.clock()
    try:
        async with runtime.db.begin() as connection:
            if command == "web":
                token = await issue_link(
                    connection,
                    Principal(WebRole.ADMIN, admin_login=login()),
                    actor=actor,
                    now=now,
                )
                minutes = int(LINK_TTL.total_seconds() // 60)
                print(f"{runtime.settings.web.public_url}{SIGN_IN_PATH}?t={token}")
                print(f"(works once, for {minutes} minutes)", file=sys.stderr)
                return 0
            if args.leader_command == "appoint":
                if args.telegram_id is not None:
                    channel, external_id = Channel.TELEGRAM, str(args.telegram_id)
                elif args.whatsapp is not None:
                    parsed = parse_mobile(args.whatsapp)
                    if isinstance(parsed, PhoneError):
                        raise RoleError(f"{args.whatsapp!r} is not a mobile number")
                    channel, external_id = Channel.WHATSAPP, parsed.e164.removeprefix("+")
                else:
                    channel, external_id = Channel.CONSOLE, str(args.console).strip()
                leader_id, new = await appoint_leader(
                    connection, channel=channel, external_id=external_id, actor=actor, now=now
                )
                state = "program leader" if new else "already program leader"
                print(f"{state} {leader_id}: {channel.value}:{external_id}")
                if new:
                    print("They ask the bot for a sign-in link with /web.")
                return 0
            if args.leader_command == "remove":
                await remove_leader(connection, leader_id=args.leader_id, actor=actor, now=now)
                print(f"program leader {args.leader_id} removed")
                return 0
            leaders = await list_leaders(connection)
    except RoleError as error:
        print(f"sertakan: {error}", file=sys.stderr)
        return 1
    if not leaders:
        print("no program leaders (appoint one: sertakan leader appoint)")
        return 0
    zone = runtime.timezone
    for item in leaders:
        print(
            f"{item.leader_id}\t{item.channel.value}:{item.external_id}\t"
            f"{item.display_name or '-'}\t{format_local(item.appointed_at, zone)}\t"
            f"{item.appointed_by}"
        )
    return 0
