"""Issue 12 (structure): a sponsorship's status changes in one module, by a declared table.

Every event from every status on the real database: only the declared moves
happen, the rest are refused with the reason; two PICs deciding at once on
PostgreSQL: one wins, the other is told it was decided; and a scan of the code
base so that no other module writes the status again.
"""

from __future__ import annotations

import ast
import asyncio
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import selectinload

from domain.vocabulary import (
    OPEN_STATUSES,
    Channel,
    ConsentMethod,
    SponsorshipStatus,
    WorkerConsent,
)
from handlers.i18n import Catalogs
from handlers.notices import Notices
from storage import sponsorship_state as state
from storage import workbench
from storage.audit import Actor
from storage.db import is_sqlite
from storage.models import Asn, AuditLog, Pic, Sponsorship
from storage.sponsorship_end import end_sponsorship
from storage.sponsorship_state import TRANSITIONS, Event, Result
from storage.workbench import ChangeProblem
from storage.worker_side import ConsentOutcome, record_consent
from tests.fakes.workbench import Office, build_office

NOW = datetime(2026, 12, 3, 4, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]
#: The packages of the product (tests and benchmarks may set a status to arrange a case).
PACKAGES = ("bot", "domain", "handlers", "scheduler", "storage")
STATE_MODULE = Path("storage/sponsorship_state.py")


# -- the table itself ------------------------------------------------------------------


def test_every_status_is_reached_and_lapsed_and_ended_are_final() -> None:
    reached = {change.target for change in TRANSITIONS.values()} | {state.INITIAL_STATUS}
    assert reached == set(SponsorshipStatus)
    for event, change in TRANSITIONS.items():
        assert SponsorshipStatus.LAPSED not in change.sources, event
        assert SponsorshipStatus.ENDED not in change.sources, event
        assert change.target not in change.sources, event
    # Whatever status it is in, an open sponsorship can be stopped, refused and erased.
    for event in (Event.STOP, Event.REFUSE, Event.ERASE):
        assert set(TRANSITIONS[event].sources) == set(OPEN_STATUSES)


def test_an_event_writes_only_its_declared_columns() -> None:
    with pytest.raises(ValueError, match="kpj"):
        state.statement(Event.ACCEPT, now=NOW, values={"kpj": "12345678901"})
    with pytest.raises(ValueError, match="status"):
        state.statement(Event.STOP, now=NOW, values={"status": SponsorshipStatus.ACTIVE})


# -- every event from every status, on the database --------------------------------------


@pytest.fixture
async def office(sessionmaker: async_sessionmaker[AsyncSession]) -> Office:
    office = await build_office(sessionmaker)
    await office.enroll()
    return office


async def _only_sponsorship(office: Office) -> Sponsorship:
    (sponsorship,) = await office.sponsorships()
    return sponsorship


async def _set_status(connection: AsyncConnection, sid: int, status: SponsorshipStatus) -> None:
    # Arranging a case: the test writes the status itself, outside the state machine.
    await connection.execute(update(Sponsorship).where(Sponsorship.id == sid).values(status=status))


async def _audit_count(connection: AsyncConnection, action: str) -> int:
    return int(
        await connection.scalar(
            select(func.count()).select_from(AuditLog).where(AuditLog.action == action)
        )
        or 0
    )


async def test_every_event_from_every_status_moves_only_as_declared(
    office: Office, db_engine: AsyncEngine
) -> None:
    sid = (await _only_sponsorship(office)).id
    actor = Actor.admin("test")
    for event, change in TRANSITIONS.items():
        for status in SponsorshipStatus:
            async with db_engine.connect() as connection:
                await connection.begin()
                await _set_status(connection, sid, status)
                audited = await _audit_count(connection, change.action) if change.action else 0
                outcome = await state.transition(connection, event, sid, now=NOW, actor=actor)
                row = (
                    await connection.execute(select(Sponsorship).where(Sponsorship.id == sid))
                ).one()
                case = f"{event} from {status}"
                if status in change.sources:
                    assert outcome.result is Result.DONE, case
                    assert outcome.status is change.target, case
                    assert row.status is change.target, case
                    assert row.status_changed_at == NOW, case
                    for column in change.stamps:
                        assert getattr(row, column) == NOW, case
                    if change.action:
                        after = await _audit_count(connection, change.action)
                        assert after == audited + 1, case
                else:
                    expected = Result.ALREADY if status is change.target else Result.NOT_ALLOWED
                    assert outcome.result is expected, case
                    assert outcome.status is status, case
                    assert row.status is status, case
                    if change.action:
                        after = await _audit_count(connection, change.action)
                        assert after == audited, case
                await connection.rollback()


async def test_a_bulk_event_moves_only_the_rows_whose_status_allows_it(
    sessionmaker: async_sessionmaker[AsyncSession], db_engine: AsyncEngine
) -> None:
    office = await build_office(sessionmaker)
    await office.enroll_two()
    first, second = (s.id for s in await office.sponsorships())
    async with db_engine.begin() as connection:
        await _set_status(connection, first, SponsorshipStatus.ACTIVE)
        await _set_status(connection, second, SponsorshipStatus.ENDED)
        moved = await state.transition_many(
            connection, Event.LAPSE, Sponsorship.id.in_([first, second]), now=NOW
        )
        assert [sid for sid, _ in moved] == [first]
        statuses = dict(
            (await connection.execute(select(Sponsorship.id, Sponsorship.status))).tuples().all()
        )
    assert statuses == {first: SponsorshipStatus.LAPSED, second: SponsorshipStatus.ENDED}


async def test_out_of_scope_is_not_found_and_an_unmet_condition_is_told_apart(
    office: Office, db_engine: AsyncEngine
) -> None:
    sponsorship = await _only_sponsorship(office)
    other_opd = await office.opd_id("BKL-DIKBUD")
    async with db_engine.connect() as connection:
        await connection.begin()
        missing = await state.transition(connection, Event.ACCEPT, sponsorship.id + 99, now=NOW)
        assert missing.result is Result.NOT_FOUND
        elsewhere = await state.transition(
            connection,
            Event.ACCEPT,
            sponsorship.id,
            now=NOW,
            scope=(Sponsorship.opd_id == other_opd,),
        )
        assert elsewhere.result is Result.NOT_FOUND
        await connection.execute(update(Sponsorship).values(worker_consent=WorkerConsent.PENDING))
        unmet = await state.transition(
            connection,
            Event.ACCEPT,
            sponsorship.id,
            now=NOW,
            conditions=(Sponsorship.worker_consent == WorkerConsent.GIVEN,),
        )
        assert unmet == state.Outcome(
            Result.CONDITION_UNMET, SponsorshipStatus.WAITING_FOR_PIC, sponsorship.opd_id
        )
        await connection.rollback()


# -- two PICs deciding at once (PostgreSQL) ----------------------------------------------


async def _decide(
    connection: AsyncConnection, decision: str, *, sid: int, opd_id: int, pic_id: int
) -> None:
    notices = Notices(Catalogs())
    if decision == "accept":
        await workbench.accept(
            connection, notices, opd_id=opd_id, sponsorship_id=sid, pic_id=pic_id, now=NOW
        )
    else:
        await workbench.return_enrollment(
            connection,
            notices,
            opd_id=opd_id,
            sponsorship_id=sid,
            pic_id=pic_id,
            reason_code=None,
            reason_text="Foto KTP buram",
            now=NOW,
        )


_LOCK_WAITERS = text(
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE wait_event_type = 'Lock' AND datname = current_database()"
)


async def _until_someone_waits_for_a_lock(engine: AsyncEngine) -> None:
    async with engine.connect() as watcher:
        for _ in range(400):
            waiting = await watcher.scalar(_LOCK_WAITERS)
            if waiting:
                return
            await asyncio.sleep(0.025)
    raise AssertionError("the second decision never waited for the first")


@pytest.mark.parametrize(
    ("first", "second"), [("accept", "accept"), ("accept", "return"), ("return", "accept")]
)
async def test_two_pics_deciding_at_once_one_wins_the_other_is_told_it_was_decided(
    office: Office, db_engine: AsyncEngine, database_url: str, first: str, second: str
) -> None:
    if is_sqlite(database_url):
        pytest.skip("row locks: PostgreSQL (SQLite writers queue whole transactions)")
    sponsorship = await _only_sponsorship(office)
    async with office.sessionmaker() as session:
        pic_id = (
            await session.execute(select(Pic.id).where(Pic.opd_id == sponsorship.opd_id))
        ).scalar_one()
    where = {"sid": sponsorship.id, "opd_id": sponsorship.opd_id, "pic_id": pic_id}
    async with db_engine.connect() as one, db_engine.connect() as two:
        await one.begin()
        await _decide(one, first, **where)  # holds the row until it commits
        await two.begin()
        late = asyncio.create_task(_decide(two, second, **where))
        await _until_someone_waits_for_a_lock(db_engine)
        await one.commit()
        planned = [n.kind for n in await office.outbox()]
        with pytest.raises(ChangeProblem, match="wrong_status"):
            await late
        await two.rollback()
    won = SponsorshipStatus.ACCEPTED if first == "accept" else SponsorshipStatus.RETURNED
    assert (await _only_sponsorship(office)).status is won
    async with db_engine.connect() as connection:
        decisions = await connection.execute(
            select(AuditLog.action).where(AuditLog.action.like("enrollment.%"))
        )
        assert decisions.scalars().all() == [f"enrollment.{first}"]
    kind = "accepted" if first == "accept" else "returned"
    assert kind in planned
    assert [n.kind for n in await office.outbox()] == planned  # the loser planned nothing


# -- nobody else writes the status --------------------------------------------------------

_SQL_STATUS_WRITE = re.compile(
    # In the SET list (up to WHERE), not a condition.
    r"\bupdate\s+sponsorship\s+set\b(?:(?!\bwhere\b)[\s\S])*?\bstatus\s*="
    r"|\binsert\s+into\s+sponsorship\b[\s\S]*?\bstatus\b",
    re.IGNORECASE,
)


def _names_sponsorship_status(node: ast.AST) -> bool:
    """`SponsorshipStatus.X` (or `Sponsorship.status`) anywhere inside `node`."""
    return any(
        isinstance(inner, ast.Attribute)
        and isinstance(inner.value, ast.Name)
        and (
            inner.value.id == "SponsorshipStatus"
            or (inner.value.id == "Sponsorship" and inner.attr == "status")
        )
        for inner in ast.walk(node)
    )


def _on_sponsorship_table(call: ast.Call) -> bool:
    """Whether a `.values(...)` call is chained on `update(Sponsorship)`/`insert(...)`."""
    for inner in ast.walk(call.func):
        if (
            isinstance(inner, ast.Call)
            and isinstance(inner.func, ast.Name | ast.Attribute)
            and (inner.func.id if isinstance(inner.func, ast.Name) else inner.func.attr)
            in ("update", "insert")
            and inner.args
            and "Sponsorship" in ast.unparse(inner.args[0])
        ):
            return True
    return False


def _is_status_key(key: ast.expr | None) -> bool:
    if isinstance(key, ast.Constant):
        return key.value == "status"
    return isinstance(key, ast.Attribute) and ast.unparse(key) == "Sponsorship.status"


def status_writes(source: str) -> Iterator[int]:
    """Lines of `source` that write a sponsorship's status: an ORM assignment, a
    `status=`/`"status":` with a SponsorshipStatus value, `.values(status=...)` on the
    sponsorship table, or SQL text updating or inserting it."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Attribute) and t.attr == "status" for t in targets):
                yield node.lineno
        elif isinstance(node, ast.Call):
            if ast.unparse(node.func) == "setattr" and "'status'" in ast.unparse(node):
                yield node.lineno
            keywords = {k.arg: k.value for k in node.keywords}
            if "status" in keywords and _names_sponsorship_status(keywords["status"]):
                yield node.lineno
            on_table = isinstance(node.func, ast.Attribute) and node.func.attr == "values"
            if on_table and _on_sponsorship_table(node):
                dicts = [a for a in node.args if isinstance(a, ast.Dict)]
                if "status" in keywords or any(_is_status_key(k) for d in dicts for k in d.keys):
                    yield node.lineno
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if _is_status_key(key) and _names_sponsorship_status(value):
                    yield node.lineno
        elif isinstance(node, ast.Constant | ast.JoinedStr):
            text = (
                node.value
                if isinstance(node, ast.Constant)
                else "".join(
                    str(part.value) if isinstance(part, ast.Constant) else "?"
                    for part in node.values
                )
            )
            if isinstance(text, str) and _SQL_STATUS_WRITE.search(text):
                yield node.lineno


# The ways the status was written before this module existed (from the git history).
OLD_WRITES = {
    "orm": "sponsorship.status = SponsorshipStatus.ENDED",
    "values": (
        "update(Sponsorship).where(Sponsorship.batch_id == b)"
        ".values(status=SponsorshipStatus.SUBMITTED, status_changed_at=now)"
    ),
    "values_any": "update(Sponsorship).where(c).values(status=target)",
    "values_dict": "update(Sponsorship).values({Sponsorship.status: s})",
    "insert_dict": 'execute(_INSERT, {"worker": w, "status": SponsorshipStatus.WAITING_FOR_PIC})',
    "constructor": "Sponsorship(worker_id=1, status=SponsorshipStatus.ACTIVE)",
    "sql": "X = '''UPDATE sponsorship\n SET status = 'lapsed' WHERE id = ANY($1)'''",
    "fstring": "X = f\"UPDATE sponsorship SET status = '{S.LAPSED.value}' WHERE id = $1\"",
    "setattr": "setattr(target, 'status', SponsorshipStatus.ENDED)",
}
READS = """
query = select(Sponsorship).where(Sponsorship.status == SponsorshipStatus.ACTIVE)
counts = {SponsorshipStatus(s): n for s, n in rows}
text = t("fix.not_returned", status=t(f"status.{sponsorship.status.value}"))
update(Sponsorship).where(Sponsorship.status.in_(OPEN)).values(next_plan=plan)
update(Outbox).values(status=OutboxStatus.SENT)
SQL = "UPDATE sponsorship SET next_plan = $1 WHERE status = 'active'"
"""


@pytest.mark.parametrize("way", sorted(OLD_WRITES))
def test_the_scan_finds_each_way_the_status_was_written_before(way: str) -> None:
    assert set(status_writes(OLD_WRITES[way])) == {1}


def test_the_scan_leaves_reads_and_other_tables_alone() -> None:
    assert list(status_writes(READS)) == []


def test_only_the_state_module_writes_a_sponsorships_status() -> None:
    writers: dict[Path, list[int]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if relative.parts[:2] == ("storage", "migrations"):
                continue  # history: each migration ran once, before this table
            lines = sorted(set(status_writes(path.read_text(encoding="utf-8"))))
            if lines:
                writers[relative] = lines
    assert STATE_MODULE in writers  # the scan sees the module's own statement
    others = {str(path): lines for path, lines in writers.items() if path != STATE_MODULE}
    assert others == {}, "write the status through storage.sponsorship_state"


async def test_the_asn_enrollment_row_starts_in_the_initial_status(office: Office) -> None:
    sponsorship = await _only_sponsorship(office)
    assert sponsorship.status is state.INITIAL_STATUS


async def test_a_refusal_arriving_after_the_asn_stopped_keeps_the_stop(
    sessionmaker: async_sessionmaker[AsyncSession], db_engine: AsyncEngine, database_url: str
) -> None:
    """The worker's refusal is handled on an enrollment loaded while it was open; the ASN's
    stop commits in between. The refusal is recorded, the stop (its reason, its month)
    stays: before this module the refusal's ORM write overwrote the end reason."""
    if is_sqlite(database_url):
        pytest.skip("interleaving two transactions: PostgreSQL (SQLite queues writers)")
    office = await build_office(sessionmaker)
    await office.enroll(consent=False)
    sponsorship = await _only_sponsorship(office)
    async with office.sessionmaker() as session, session.begin():
        target = (
            await session.execute(
                select(Sponsorship)
                .options(selectinload(Sponsorship.worker))
                .where(Sponsorship.id == sponsorship.id)
            )
        ).scalar_one()
        asn_account = (
            await session.execute(select(Asn.channel_account_id).where(Asn.id == target.asn_id))
        ).scalar_one()
        async with db_engine.begin() as elsewhere:
            ended = await end_sponsorship(
                elsewhere,
                sponsorship_id=sponsorship.id,
                asn_id=target.asn_id,
                account_id=asn_account,
                reason_code="cannot_pay",
                reason_text=None,
                now=NOW,
            )
            assert ended is not None
        answer = await record_consent(
            session,
            target,
            granted=False,
            method=ConsentMethod.WHATSAPP,
            channel=Channel.WHATSAPP,
            channel_account_id=asn_account,
            actor=Actor.account("worker", asn_account),
            now=NOW.replace(hour=5),
        )
        assert answer.outcome is ConsentOutcome.REFUSED
        assert target.status is SponsorshipStatus.ENDED
    stopped = await _only_sponsorship(office)
    assert stopped.worker_consent is WorkerConsent.REFUSED
    assert stopped.end_reason == "asn_stopped:cannot_pay"
    assert stopped.status_changed_at == NOW
