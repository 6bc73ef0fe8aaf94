"""Run `python -m <module> ...` under cProfile, counting SQL statements (bench_cluster --profile).

    python -m bench.profiled <folder> <module> [args...]

Writes, when the program ends (SIGTERM included: it is turned into a normal
exit), or with PROFILE_ON_SIGNAL=1 for what ran from SIGUSR1 to SIGUSR2,
`<folder>/<pid>.prof` (cProfile's stats, CPU time) and `<folder>/<pid>.sql.json`:
the statements the process sent to its database, counted by their first words
(each one round trip on asyncpg), with the transactions' BEGIN, COMMIT and
ROLLBACK and the pool checkouts (a pre-ping is three round trips more).
Only for benches: the profiler roughly doubles the process's CPU time.
"""

from __future__ import annotations

import collections
import cProfile
import json
import os
import re
import runpy
import signal
import sys
import time
from pathlib import Path
from typing import Any

_WORDS = re.compile(r"\s+")


def _statement_kind(statement: str) -> str:
    words = _WORDS.sub(" ", statement.strip()).split(" ")
    head = " ".join(words[:3]).upper()
    if head.startswith("WITH CLOCK"):
        return "send budget take (WITH clock ...)"
    if head.startswith("INSERT INTO SEND_SPACING"):
        return "send budget defer (INSERT INTO send_spacing)"
    return " ".join(words[:4])[:80]


def main() -> None:
    folder = Path(sys.argv[1])
    module = sys.argv[2]
    folder.mkdir(parents=True, exist_ok=True)
    counts: collections.Counter[str] = collections.Counter()
    transactions: collections.Counter[str] = collections.Counter()

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "before_cursor_execute")
    def _count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        counts[_statement_kind(statement)] += 1

    @event.listens_for(Engine, "begin")
    def _begin(_conn: Any) -> None:
        transactions["BEGIN"] += 1

    @event.listens_for(Engine, "commit")
    def _commit(_conn: Any) -> None:
        transactions["COMMIT"] += 1

    @event.listens_for(Engine, "rollback")
    def _rollback(_conn: Any) -> None:
        transactions["ROLLBACK"] += 1

    from sqlalchemy.pool import Pool

    @event.listens_for(Pool, "checkout")
    def _checkout(*_: Any) -> None:
        transactions["pool checkout (a ping when pool_pre_ping)"] += 1

    @event.listens_for(Pool, "connect")
    def _connect(_dbapi: Any, record: Any) -> None:
        # A new connection (a new PostgreSQL backend) per pool: an overflow connection is
        # closed when it is checked in, so a pool too small for the load connects anew.
        pool = getattr(record, "_ConnectionRecord__pool", None)
        size = pool.size() if pool is not None and hasattr(pool, "size") else "?"
        transactions[f"new connection, pool of size {size}"] += 1

    def _exit(*_: Any) -> None:
        raise SystemExit(0)

    # CPU time, not wall time: on a shared machine the wall clock counts the others too.
    profile = cProfile.Profile(time.process_time)

    def _dump() -> None:
        pid = os.getpid()
        profile.dump_stats(folder / f"{pid}.prof")
        (folder / f"{pid}.sql.json").write_text(
            json.dumps({"statements": dict(counts), "transactions": dict(transactions)}, indent=1)
        )

    def _start(*_: Any) -> None:
        counts.clear()
        transactions.clear()
        profile.enable()

    def _stop(*_: Any) -> None:
        profile.disable()
        _dump()

    sys.argv = [module, *sys.argv[3:]]
    signal.signal(signal.SIGTERM, _exit)
    # SIGUSR1 starts the profile (the counts start again), SIGUSR2 stops and writes it: the
    # bench profiles its load, not the imports. Without PROFILE_ON_SIGNAL: the whole run.
    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _stop)
    if not os.environ.get("PROFILE_ON_SIGNAL"):
        profile.enable()
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit:
        pass
    finally:
        if not os.environ.get("PROFILE_ON_SIGNAL"):
            profile.disable()
            _dump()


if __name__ == "__main__":
    main()
