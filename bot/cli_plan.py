"""`sertakan plan run` and `sertakan plan status`: the daily planners, on demand and as recorded.

`plan run`, for the operator after an outage, a changed holiday list or a
restored database: it runs the same planners as the scheduler
(`bot.app.build_planning`) once, and prints what they wrote. Idempotent: every
notice has a dedupe key, so a second run (or the running bot's own runs) adds
nothing. It takes each run's lease like the bot's processes do, so it never
plans beside a run in progress (it says so and plans nothing). The running
bot sends what was planned (the command itself sends nothing).

Reminders are planned whatever the time (their notices wait for 08:00 local
in the outbox anyway); digests only on working days from PROGRAM_DIGEST_TIME,
as the scheduler plans them, and the output says why none were.

`plan status` lists the latest attempts of every planning run (job, run key,
who, start, end, pages, rows, outcome; `storage.planner_runs`): one `done` per
job and day is "the planner ran once".

Wired into bot/cli.py by `add_parsers(sub)` and `dispatch(args, runtime)`.
"""

from __future__ import annotations

import argparse

from bot.app import Runtime, build_planning
from domain.local_time import format_local
from scheduler.planning import JOB_DIGEST, JOB_REMINDERS
from storage import planner_runs


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `plan` command and its subcommands to the CLI's subparsers."""
    plan = sub.add_parser("plan", help="the daily planners: dues reminders and PIC digests")
    commands = plan.add_subparsers(dest="plan_command", required=True)
    commands.add_parser(
        "run",
        help="plan today's dues reminders, escalations, lapses and PIC digests now "
        "(idempotent: what is planned already is not planned again)",
    )
    status = commands.add_parser(
        "status", help="the latest planning runs: who ran them, when, how far, what they wrote"
    )
    status.add_argument("--limit", type=int, default=20, help="attempts to list (default 20)")


async def dispatch(args: argparse.Namespace, runtime: Runtime) -> int | None:
    """Run a `plan` command; None when `args` is not one (the caller goes on)."""
    if getattr(args, "command", None) != "plan":
        return None
    if args.plan_command == "run":
        return await _run(runtime)
    if args.plan_command == "status":
        return await _status(runtime, args.limit)
    raise ValueError(f"unknown plan command {args.plan_command!r}")


async def _run(runtime: Runtime) -> int:
    planning = build_planning(runtime)
    local = runtime.clock().astimezone(runtime.timezone)
    today = local.date()
    lease = await planner_runs.acquire(
        runtime.db,
        job=JOB_REMINDERS,
        run_key=planning.run_key(),
        owner=planning.owner,
        now=runtime.clock(),
        lease_s=runtime.settings.planner.lease_s,
        again=True,
    )
    if lease is None:
        print(f"reminders for {today.isoformat()}: being planned by another process now")
    else:
        result = await planning.run_reminders(lease)
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
        planned = await planning.run(JOB_DIGEST, again=True)
        if planned is None:
            print("digests: being planned by another process now")
        else:
            print(f"digests: {planned} new (a PIC with nothing new since their last one gets none)")
    return 0


async def _status(runtime: Runtime, limit: int) -> int:
    runs = await planner_runs.recent(runtime.db, limit=limit)
    if not runs:
        print("no planning runs recorded yet")
        return 0
    zone = runtime.timezone
    print(f"{'job':<16} {'run':<11} {'status':<10} {'started':<20} {'ended':<20} pages  rows  by")
    for run in runs:
        ended = format_local(run.finished_at, zone) if run.finished_at else "-"
        print(
            f"{run.job:<16} {run.run_key:<11} {run.status:<10} "
            f"{format_local(run.started_at, zone):<20} {ended:<20} "
            f"{run.chunks:>5} {run.rows:>5}  {run.owner}"
            + (f"  ({run.error})" if run.error else "")
        )
    return 0
