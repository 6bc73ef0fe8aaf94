"""PostgreSQL: `asn.open_sponsorships` kept by statement triggers (issue 14, the planner).

Migration 0015 kept the count with a PostgreSQL row trigger: one `UPDATE asn`
per sponsorship moved, 8 ms of the 28-32 ms a page's 300 lapses took at 1.44
million sponsorships (docs/BENCHMARKS.md section 14). Now, as 0015's other two
counts, statement triggers with transition tables: the statement's rows
(+1 for each open row it added, -1 for each open row it took away; rows whose
ASN and openness did not change cancel out) are summed per ASN, and the ASN
rows are locked in id order before one `UPDATE asn ... FROM` applies the sums,
so two bulk statements (the planner's pages, a KPJ import) lock shared ASN rows
in one order and cannot deadlock on them. PostgreSQL forbids a column list on
a trigger with transition tables, so the UPDATE trigger runs for every UPDATE
of `sponsorship` (a statement that moves no open row changes nothing).

SQLite keeps 0015's row triggers (each runs right after its row, exact).

Revision ID: 0017_pgplan
Revises: 0016_tg_inbound
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from domain.vocabulary import SponsorshipStatus

revision: str = "0017_pgplan"
down_revision: str | Sequence[str] | None = "0016_tg_inbound"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CLOSED = ", ".join(f"'{status.value}'" for status in SponsorshipStatus if not status.is_open)


def _open_rows(table: str, delta: int) -> str:
    return f"SELECT asn_id, {delta} AS delta FROM {table} WHERE status NOT IN ({_CLOSED})"


def _function(name: str, rows: str) -> str:
    """A statement trigger function: the net change per ASN of `rows`, locked in id order,
    then one UPDATE."""
    return f"""
    CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        WITH change AS (
            SELECT asn_id, sum(delta) AS delta FROM ({rows}) AS moved
            GROUP BY asn_id HAVING sum(delta) <> 0
        ), locked AS (
            SELECT asn.id, change.delta FROM asn JOIN change ON change.asn_id = asn.id
            ORDER BY asn.id FOR NO KEY UPDATE OF asn
        )
        UPDATE asn SET open_sponsorships = asn.open_sponsorships + locked.delta
        FROM locked WHERE asn.id = locked.id;
        RETURN NULL;
    END
    $$
    """


_EVENTS = (
    ("insert", "INSERT", "NEW TABLE AS new_rows", "inserted"),
    ("delete", "DELETE", "OLD TABLE AS old_rows", "deleted"),
    ("update", "UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows", "updated"),
)

UPGRADE = [
    "DROP TRIGGER IF EXISTS asn_open_sponsorship_update ON sponsorship",
    "DROP TRIGGER IF EXISTS asn_open_sponsorship_insert_delete ON sponsorship",
    "DROP FUNCTION IF EXISTS asn_open_sponsorships_counted()",
    _function("asn_open_inserted", _open_rows("new_rows", 1)),
    _function("asn_open_deleted", _open_rows("old_rows", -1)),
    _function(
        "asn_open_updated", f"{_open_rows('new_rows', 1)} UNION ALL {_open_rows('old_rows', -1)}"
    ),
    *(
        f"""
    CREATE TRIGGER asn_open_{name} AFTER {event} ON sponsorship REFERENCING {tables}
    FOR EACH STATEMENT EXECUTE FUNCTION asn_open_{function}()
    """
        for name, event, tables, function in _EVENTS
    ),
]

#: 0015's row trigger, as it was.
_OPEN_OLD, _OPEN_NEW = f"OLD.status NOT IN ({_CLOSED})", f"NEW.status NOT IN ({_CLOSED})"
_ASN_LESS = "UPDATE asn SET open_sponsorships = open_sponsorships - 1 WHERE id = OLD.asn_id"
_ASN_MORE = "UPDATE asn SET open_sponsorships = open_sponsorships + 1 WHERE id = NEW.asn_id"
DOWNGRADE = [
    *(f"DROP TRIGGER IF EXISTS asn_open_{name} ON sponsorship" for name, *_ in _EVENTS),
    *(f"DROP FUNCTION IF EXISTS asn_open_{function}()" for *_, function in _EVENTS),
    f"""
    CREATE FUNCTION asn_open_sponsorships_counted() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP <> 'INSERT' THEN
            IF {_OPEN_OLD} THEN {_ASN_LESS}; END IF;
        END IF;
        IF TG_OP <> 'DELETE' THEN
            IF {_OPEN_NEW} THEN {_ASN_MORE}; END IF;
        END IF;
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER asn_open_sponsorship_insert_delete AFTER INSERT OR DELETE ON sponsorship
    FOR EACH ROW EXECUTE FUNCTION asn_open_sponsorships_counted()
    """,
    f"""
    CREATE TRIGGER asn_open_sponsorship_update AFTER UPDATE OF status, asn_id ON sponsorship
    FOR EACH ROW WHEN (({_OPEN_OLD}) IS DISTINCT FROM ({_OPEN_NEW})
                       OR OLD.asn_id IS DISTINCT FROM NEW.asn_id)
    EXECUTE FUNCTION asn_open_sponsorships_counted()
    """,
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in UPGRADE:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in DOWNGRADE:
            op.execute(statement)
