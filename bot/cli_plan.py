"""`sertakan plan run`: today's dues reminders and PIC digests, planned now.

For the operator after an outage, a changed holiday list or a restored
database: it runs the same planners as the scheduler (`bot.app.build_planners`)
once, and prints what they wrote. Idempotent: every notice has a dedupe key,
so a second run (or the running bot's own runs) adds nothing. The running
bot sends what was planned (the command itself sends nothing).

Reminders are planned whatever the time (their notices wait for 08:00 local
in the outbox anyway); digests only on working days from PROGRAM_DIGEST_TIME,
as the scheduler plans them, and the output says why none were.

Wired into bot/cli.py by `add_parsers(sub)` and `dispatch(args, runtime)`.
"""

from __future__ import annotations

import argparse

from bot.app import Runtime, build_planners


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `plan` command and its subcommand to the CLI's subparsers."""
    plan = sub.add_parser("plan", help="the daily planners: dues reminders and PIC digests")
    commands = plan.add_subparsers(dest="plan_command", required=True)
    commands.add_parser(
        "run",
        help="plan today's dues reminders, escalations, lapses and PIC digests now "
        "(idempotent: what is planned already is not planned again)",
    )


async def dispatch(args: argparse.Namespace, runtime: Runtime) -> int | None:
    """Run a `plan` command; None when `args` is not one (the caller goes on)."""
    if getattr(args, "command", None) != "plan":
        return None
    if args.plan_command != "run":
        raise ValueError(f"unknown plan command {args.plan_command!r}")
    return await _run(runtime)


async def _run(runtime: Runtime) -> int:
    reminders, digest = build_planners(runtime)
    local = runtime.clock().astimezone(runtime.timezone)
    today = local.date()
    result = await reminders.plan()
    print(
        f"reminders for {today.isoformat()}: {result.notices} new notices "
        f"(5 days before {result.before5}, 1 day before {result.before1}, "
        f"overdue {result.overdue}, escalation {result.escalation}, "
        f"payroll to PICs {result.payroll}, lapse {result.lapse_notices}); "
        f"{result.lapsed} sponsorships lapsed"
    )
    digest_time = runtime.settings.program.digest_time
    if not runtime.calendar.is_working_day(today):
        print(f"digests: none, {today.isoformat()} is not a working day")
    elif local.time() < digest_time:
        print(
            f"digests: none before {digest_time.strftime('%H:%M')} (PROGRAM_DIGEST_TIME); "
            "the bot plans them then"
        )
    else:
        planned = await digest.plan()
        print(f"digests: {planned} new (a PIC with nothing new since their last one gets none)")
    return 0
