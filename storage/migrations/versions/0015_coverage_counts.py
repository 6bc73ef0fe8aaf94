"""The coverage page's counts kept by triggers: `coverage_area`, `coverage_group` and
`asn.open_sponsorships` (docs/ARCHITECTURE.md, "Coverage read afresh: counts kept by
triggers").

`coverage_group` (sponsorships per status, OPD, first month, paid-until and gap)
and `asn.open_sponsorships` are plain counts, kept by row triggers (and, for
`coverage_group` on PostgreSQL, statement triggers with one ordered upsert); see
their blocks below. `coverage_area` holds, per place (regency, district, village; every erased
worker in one row) and sponsorship status, how many distinct workers hold a
sponsorship in that status: what the coverage page's villages table used to
compute afresh with a join of every sponsorship and its worker. Triggers keep
it in step with every write, one definition per dialect:

- SQLite: row triggers on `sponsorship` (insert, delete, update of status or
  worker) and `worker` (update of the address or erasure). SQLite runs a row
  trigger right after its row is written, so each sees the table as it was
  between rows and a bulk statement is counted exactly row by row.
- PostgreSQL: AFTER ROW triggers would all run at the end of the statement,
  each seeing every row already changed (two sponsorships of one worker
  changed by one statement would be miscounted), so `sponsorship` has
  statement triggers with transition tables: the net change of (worker,
  status) rows, compared with the rows left, gives each pair's change of
  presence exactly, for any statement. `worker` keeps a row trigger: one
  worker's change of place reads only its own sponsorships, which that
  statement does not change.

A worker counts once per status they hold: the test that the row exists is
an index probe on the new `ix_sponsorship_worker_status`. The backfill is one
INSERT ... SELECT run by the database (no rows through Python, whatever the
size), and so are the other two's.

Revision ID: 0015_coverage_counts
Revises: 0014_coverage
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from domain.vocabulary import SponsorshipStatus

revision: str = "0015_coverage_counts"
down_revision: str | Sequence[str] | None = "0014_coverage"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEY = "erased, regency, district, village, status"


def _places(worker: str) -> tuple[str, str, str, str]:
    """The place columns of `worker` (a table alias, OLD or NEW): erased workers' address
    is gone (placeholders), so all of them share one place with empty names."""
    kept = f"{worker}.erased_at IS NULL"
    return (
        f"{worker}.erased_at IS NOT NULL",
        f"CASE WHEN {kept} THEN COALESCE({worker}.regency, '') ELSE '' END",
        f"CASE WHEN {kept} THEN {worker}.district ELSE '' END",
        f"CASE WHEN {kept} THEN {worker}.village ELSE '' END",
    )


def _place(worker: str) -> str:
    return ", ".join(_places(worker))


def _place_of_key(worker: str) -> str:
    """`coverage_area`'s place columns equal to `worker`'s place."""
    columns = ("erased", "regency", "district", "village")
    return " AND ".join(
        f"coverage_area.{column} = ({value})"
        for column, value in zip(columns, _places(worker), strict=True)
    )


def _place_changed(old: str, new: str, *, differ: str = "IS NOT") -> str:
    pairs = zip(_places(old), _places(new), strict=True)
    return " OR ".join(f"({a}) {differ} ({b})" for a, b in pairs)


def _holds(worker_id: str, status: str, *, other_than: str | None = None) -> str:
    """Whether the worker still holds a sponsorship in the status (excluding one row)."""
    excluded = f" AND held.id <> {other_than}" if other_than else ""
    return (
        "EXISTS (SELECT 1 FROM sponsorship AS held "
        f"WHERE held.worker_id = {worker_id} AND held.status = {status}{excluded})"
    )


_ADD_ONE = f"ON CONFLICT ({_KEY}) DO UPDATE SET workers = workers + 1"

#: Every statement, SQLite. A decrement is an UPDATE (never inserts a row).
_SQLITE = [
    f"""
    CREATE TRIGGER coverage_area_sponsorship_insert AFTER INSERT ON sponsorship
    WHEN NOT {_holds("NEW.worker_id", "NEW.status", other_than="NEW.id")}
    BEGIN
        INSERT INTO coverage_area ({_KEY}, workers)
        SELECT {_place("w")}, NEW.status, 1 FROM worker AS w WHERE w.id = NEW.worker_id
        {_ADD_ONE};
    END
    """,
    f"""
    CREATE TRIGGER coverage_area_sponsorship_delete AFTER DELETE ON sponsorship
    WHEN NOT {_holds("OLD.worker_id", "OLD.status")}
    BEGIN
        UPDATE coverage_area SET workers = workers - 1 FROM worker AS w
        WHERE w.id = OLD.worker_id AND {_place_of_key("w")} AND coverage_area.status = OLD.status;
    END
    """,
    f"""
    CREATE TRIGGER coverage_area_sponsorship_update AFTER UPDATE OF status, worker_id
    ON sponsorship
    WHEN OLD.status <> NEW.status OR OLD.worker_id <> NEW.worker_id
    BEGIN
        UPDATE coverage_area SET workers = workers - 1 FROM worker AS w
        WHERE w.id = OLD.worker_id AND {_place_of_key("w")} AND coverage_area.status = OLD.status
          AND NOT {_holds("OLD.worker_id", "OLD.status")};
        INSERT INTO coverage_area ({_KEY}, workers)
        SELECT {_place("w")}, NEW.status, 1 FROM worker AS w
        WHERE w.id = NEW.worker_id
          AND NOT {_holds("NEW.worker_id", "NEW.status", other_than="NEW.id")}
        {_ADD_ONE};
    END
    """,
    f"""
    CREATE TRIGGER coverage_area_worker_update
    AFTER UPDATE OF regency, district, village, erased_at ON worker
    WHEN {_place_changed("OLD", "NEW")}
    BEGIN
        UPDATE coverage_area SET workers = workers - 1
        WHERE {_place_of_key("OLD")}
          AND coverage_area.status IN (SELECT status FROM sponsorship WHERE worker_id = OLD.id);
        INSERT INTO coverage_area ({_KEY}, workers)
        SELECT DISTINCT {_place("NEW")}, status, 1 FROM sponsorship WHERE worker_id = NEW.id
        {_ADD_ONE};
    END
    """,
]

_SQLITE_DROP = [
    "DROP TRIGGER IF EXISTS coverage_area_worker_update",
    "DROP TRIGGER IF EXISTS coverage_area_sponsorship_update",
    "DROP TRIGGER IF EXISTS coverage_area_sponsorship_delete",
    "DROP TRIGGER IF EXISTS coverage_area_sponsorship_insert",
]


def _pg_statement_triggers(prefix: str) -> list[str]:
    """`{prefix}_insert`, `_delete` and `_update`: statement triggers on `sponsorship`
    with their transition tables, calling `{prefix}_inserted()` and so on."""
    events = (
        ("insert", "INSERT", "NEW TABLE AS new_rows", "inserted"),
        ("delete", "DELETE", "OLD TABLE AS old_rows", "deleted"),
        ("update", "UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows", "updated"),
    )
    return [
        f"""
    CREATE TRIGGER {prefix}_{name} AFTER {event} ON sponsorship REFERENCING {tables}
    FOR EACH STATEMENT EXECUTE FUNCTION {prefix}_{function}()
    """
        for name, event, tables, function in events
    ]


#: PostgreSQL: `coverage_area_shift` takes the rows a statement added (+1) and removed
#: (-1) as (worker, status, delta), nets them per pair, and compares with the rows left
#: after the statement: the pair was present before iff (rows now - net) > 0. The
#: changes are applied in key order (concurrent writers lock count rows in one order).
#: A worker's change of place and a change of their sponsorships in two transactions
#: serialise on the worker row (FOR SHARE here, the UPDATE's lock there): the worker
#: trigger then reads the statuses committed, this function the place committed.
_POSTGRESQL = [
    f"""
    CREATE FUNCTION coverage_area_shift(
        worker_ids integer[], statuses text[], deltas integer[]
    ) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
    -- The workers first, in id order: a concurrent change of their place waits for this
    -- transaction, or this waits for it and then reads the place it committed (each
    -- statement below takes a new snapshot), so neither counts from a stale place.
    PERFORM 1 FROM worker WHERE id = ANY(worker_ids) ORDER BY id FOR SHARE;
    INSERT INTO coverage_area AS counted ({_KEY}, workers)
    SELECT {_place("w")}, moved.status, sum(moved.delta)
    FROM (
        SELECT net.worker_id, net.status,
               (now_held.n > 0)::integer - (now_held.n - net.delta > 0)::integer AS delta
        FROM (
            SELECT worker_id, status, sum(delta) AS delta
            FROM unnest(worker_ids, statuses, deltas) AS change(worker_id, status, delta)
            GROUP BY worker_id, status
            HAVING sum(delta) <> 0
        ) AS net
        CROSS JOIN LATERAL (
            SELECT count(*) AS n FROM sponsorship AS held
            WHERE held.worker_id = net.worker_id AND held.status = net.status
        ) AS now_held
    ) AS moved
    JOIN worker AS w ON w.id = moved.worker_id
    WHERE moved.delta <> 0
    GROUP BY 1, 2, 3, 4, 5
    HAVING sum(moved.delta) <> 0
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT ({_KEY}) DO UPDATE SET workers = counted.workers + EXCLUDED.workers;
    END
    $$
    """,
    """
    CREATE FUNCTION coverage_area_sponsorship_inserted() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM coverage_area_shift(array_agg(worker_id), array_agg(status::text), array_agg(1))
        FROM new_rows;
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE FUNCTION coverage_area_sponsorship_deleted() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM coverage_area_shift(array_agg(worker_id), array_agg(status::text), array_agg(-1))
        FROM old_rows;
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE FUNCTION coverage_area_sponsorship_updated() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        -- Only rows whose status or worker changed (paid-until, consent... change neither).
        PERFORM coverage_area_shift(
            array_agg(change.worker_id), array_agg(change.status), array_agg(change.delta)
        )
        FROM old_rows AS o
        JOIN new_rows AS n ON n.id = o.id
        CROSS JOIN LATERAL (
            VALUES (o.worker_id, o.status::text, -1), (n.worker_id, n.status::text, 1)
        ) AS change(worker_id, status, delta)
        WHERE o.status <> n.status OR o.worker_id <> n.worker_id;
        RETURN NULL;
    END
    $$
    """,
    *_pg_statement_triggers("coverage_area_sponsorship"),
    f"""
    CREATE FUNCTION coverage_area_worker_moved() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE coverage_area SET workers = workers - 1
        WHERE {_place_of_key("OLD")}
          AND coverage_area.status IN (SELECT status FROM sponsorship WHERE worker_id = OLD.id);
        INSERT INTO coverage_area AS counted ({_KEY}, workers)
        SELECT DISTINCT {_place("NEW")}, status, 1 FROM sponsorship WHERE worker_id = NEW.id
        ORDER BY status
        ON CONFLICT ({_KEY}) DO UPDATE SET workers = counted.workers + 1;
        RETURN NULL;
    END
    $$
    """,
    f"""
    CREATE TRIGGER coverage_area_worker_update
    AFTER UPDATE OF regency, district, village, erased_at ON worker
    FOR EACH ROW WHEN ({_place_changed("OLD", "NEW", differ="IS DISTINCT FROM")})
    EXECUTE FUNCTION coverage_area_worker_moved()
    """,
]

_POSTGRESQL_DROP = [
    "DROP TRIGGER IF EXISTS coverage_area_worker_update ON worker",
    "DROP TRIGGER IF EXISTS coverage_area_sponsorship_update ON sponsorship",
    "DROP TRIGGER IF EXISTS coverage_area_sponsorship_delete ON sponsorship",
    "DROP TRIGGER IF EXISTS coverage_area_sponsorship_insert ON sponsorship",
    "DROP FUNCTION IF EXISTS coverage_area_worker_moved()",
    "DROP FUNCTION IF EXISTS coverage_area_sponsorship_updated()",
    "DROP FUNCTION IF EXISTS coverage_area_sponsorship_deleted()",
    "DROP FUNCTION IF EXISTS coverage_area_sponsorship_inserted()",
    "DROP FUNCTION IF EXISTS coverage_area_shift(integer[], text[], integer[])",
]

#: `asn.open_sponsorships`: plain counts, so row triggers are exact on both databases
#: (increments commute; PostgreSQL's end-of-statement row triggers read nothing).
_CLOSED = ", ".join(f"'{status.value}'" for status in SponsorshipStatus if not status.is_open)
_OPEN_OLD, _OPEN_NEW = f"OLD.status NOT IN ({_CLOSED})", f"NEW.status NOT IN ({_CLOSED})"
_ASN_LESS = "UPDATE asn SET open_sponsorships = open_sponsorships - 1 WHERE id = OLD.asn_id"
_ASN_MORE = "UPDATE asn SET open_sponsorships = open_sponsorships + 1 WHERE id = NEW.asn_id"
_ASN_MOVED = f"({_OPEN_OLD}) <> ({_OPEN_NEW}) OR OLD.asn_id <> NEW.asn_id"

_SQLITE_ASN = [
    f"""
    CREATE TRIGGER asn_open_sponsorship_insert AFTER INSERT ON sponsorship
    WHEN {_OPEN_NEW} BEGIN {_ASN_MORE}; END
    """,
    f"""
    CREATE TRIGGER asn_open_sponsorship_delete AFTER DELETE ON sponsorship
    WHEN {_OPEN_OLD} BEGIN {_ASN_LESS}; END
    """,
    f"""
    CREATE TRIGGER asn_open_sponsorship_update AFTER UPDATE OF status, asn_id ON sponsorship
    WHEN {_ASN_MOVED}
    BEGIN
        {_ASN_LESS} AND {_OPEN_OLD};
        {_ASN_MORE} AND {_OPEN_NEW};
    END
    """,
]
_SQLITE_ASN_DROP = [
    "DROP TRIGGER IF EXISTS asn_open_sponsorship_update",
    "DROP TRIGGER IF EXISTS asn_open_sponsorship_delete",
    "DROP TRIGGER IF EXISTS asn_open_sponsorship_insert",
]
_POSTGRESQL_ASN = [
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
    FOR EACH ROW WHEN ({_ASN_MOVED.replace(" <> ", " IS DISTINCT FROM ")})
    EXECUTE FUNCTION asn_open_sponsorships_counted()
    """,
]
_POSTGRESQL_ASN_DROP = [
    "DROP TRIGGER IF EXISTS asn_open_sponsorship_update ON sponsorship",
    "DROP TRIGGER IF EXISTS asn_open_sponsorship_insert_delete ON sponsorship",
    "DROP FUNCTION IF EXISTS asn_open_sponsorships_counted()",
]
#: Only the ASN with an open sponsorship: the others keep the column's default 0.
ASN_BACKFILL = f"""
    UPDATE asn SET open_sponsorships = (
        SELECT count(*) FROM sponsorship
        WHERE sponsorship.asn_id = asn.id AND sponsorship.status NOT IN ({_CLOSED})
    )
    WHERE id IN (SELECT asn_id FROM sponsorship WHERE status NOT IN ({_CLOSED}))
"""

#: `coverage_group`: sponsorships per (status, OPD, first month, paid-until, gap), plain
#: counts (paid-until None keyed as 0001-01-01). SQLite: row triggers. PostgreSQL:
#: statement triggers that net the statement's rows per key and apply them in one upsert
#: in key order, so two bulk statements (the planner's lapse, a KPJ import) lock the
#: shared count rows in one order.
_GROUP_COLUMNS = ("status", "opd_id", "first_month", "paid_until", "paid_after_gap")
_GROUP = ", ".join(_GROUP_COLUMNS)


def _group_values(row: str, none: str) -> tuple[str, ...]:
    return tuple(
        f"COALESCE({row}.{column}, {none})" if column == "paid_until" else f"{row}.{column}"
        for column in _GROUP_COLUMNS
    )


_SQLITE_NONE = "'0001-01-01'"
_GROUP_LESS = "UPDATE coverage_group SET sponsorships = sponsorships - 1 WHERE " + " AND ".join(
    f"coverage_group.{column} = {value}"
    for column, value in zip(_GROUP_COLUMNS, _group_values("OLD", _SQLITE_NONE), strict=True)
)
_GROUP_MORE = (
    f"INSERT INTO coverage_group ({_GROUP}, sponsorships) "
    f"VALUES ({', '.join(_group_values('NEW', _SQLITE_NONE))}, 1) "
    f"ON CONFLICT ({_GROUP}) DO UPDATE SET sponsorships = sponsorships + 1"
)
_GROUP_CHANGED = " OR ".join(f"OLD.{column} IS NOT NEW.{column}" for column in _GROUP_COLUMNS)
_SQLITE_GROUP = [
    f"""
    CREATE TRIGGER coverage_group_insert AFTER INSERT ON sponsorship
    BEGIN {_GROUP_MORE}; END
    """,
    f"""
    CREATE TRIGGER coverage_group_delete AFTER DELETE ON sponsorship
    BEGIN {_GROUP_LESS}; END
    """,
    f"""
    CREATE TRIGGER coverage_group_update AFTER UPDATE OF {_GROUP} ON sponsorship
    WHEN {_GROUP_CHANGED}
    BEGIN {_GROUP_LESS}; {_GROUP_MORE}; END
    """,
]
_SQLITE_GROUP_DROP = [
    "DROP TRIGGER IF EXISTS coverage_group_update",
    "DROP TRIGGER IF EXISTS coverage_group_delete",
    "DROP TRIGGER IF EXISTS coverage_group_insert",
]


def _pg_rows(table: str, delta: int) -> str:
    values = ", ".join(
        f"{value} AS {column}"
        for column, value in zip(
            _GROUP_COLUMNS, _group_values(table, "DATE '0001-01-01'"), strict=True
        )
    )
    return f"SELECT {values}, {delta} AS delta FROM {table}"


def _pg_group_function(name: str, rows: str) -> str:
    """A statement trigger function: the net change per key of `rows`, one upsert."""
    return f"""
    CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO coverage_group AS counted ({_GROUP}, sponsorships)
        SELECT {_GROUP}, sum(delta) FROM ({rows}) AS change
        GROUP BY {_GROUP} HAVING sum(delta) <> 0
        ORDER BY {_GROUP}
        ON CONFLICT ({_GROUP})
        DO UPDATE SET sponsorships = counted.sponsorships + EXCLUDED.sponsorships;
        RETURN NULL;
    END
    $$
    """


_POSTGRESQL_GROUP = [
    _pg_group_function("coverage_group_inserted", _pg_rows("new_rows", 1)),
    _pg_group_function("coverage_group_deleted", _pg_rows("old_rows", -1)),
    # Rows whose key did not change cancel out in the GROUP BY.
    _pg_group_function(
        "coverage_group_updated",
        f"{_pg_rows('new_rows', 1)} UNION ALL {_pg_rows('old_rows', -1)}",
    ),
    *_pg_statement_triggers("coverage_group"),
]
_POSTGRESQL_GROUP_DROP = [
    "DROP TRIGGER IF EXISTS coverage_group_update ON sponsorship",
    "DROP TRIGGER IF EXISTS coverage_group_delete ON sponsorship",
    "DROP TRIGGER IF EXISTS coverage_group_insert ON sponsorship",
    "DROP FUNCTION IF EXISTS coverage_group_updated()",
    "DROP FUNCTION IF EXISTS coverage_group_deleted()",
    "DROP FUNCTION IF EXISTS coverage_group_inserted()",
]
GROUP_BACKFILL = f"""
    INSERT INTO coverage_group ({_GROUP}, sponsorships)
    SELECT status, opd_id, first_month, COALESCE(paid_until, {{none}}), paid_after_gap, count(*)
    FROM sponsorship GROUP BY 1, 2, 3, 4, 5
"""

#: The backfill: the distinct (worker, status) pairs counted per place, by the database.
BACKFILL = f"""
    INSERT INTO coverage_area ({_KEY}, workers)
    SELECT {_place("w")}, pairs.status, count(*)
    FROM (SELECT DISTINCT worker_id, status FROM sponsorship) AS pairs
    JOIN worker AS w ON w.id = pairs.worker_id
    GROUP BY 1, 2, 3, 4, 5
"""


def upgrade() -> None:
    op.create_table(
        "coverage_area",
        sa.Column("erased", sa.Boolean(), nullable=False),
        sa.Column("regency", sa.String(length=120), nullable=False),
        sa.Column("district", sa.String(length=120), nullable=False),
        sa.Column("village", sa.String(length=120), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("workers", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "erased", "regency", "district", "village", "status", name=op.f("pk_coverage_area")
        ),
    )
    with op.batch_alter_table("sponsorship", schema=None) as batch_op:
        batch_op.create_index("ix_sponsorship_worker_status", ["worker_id", "status"], unique=False)
    with op.batch_alter_table("asn", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "open_sponsorships", sa.Integer(), server_default=sa.text("0"), nullable=False
            )
        )
        batch_op.create_index("ix_asn_opd_open", ["opd_id", "open_sponsorships"], unique=False)
    op.create_table(
        "coverage_group",
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("opd_id", sa.Integer(), nullable=False),
        sa.Column("first_month", sa.Date(), nullable=False),
        sa.Column("paid_until", sa.Date(), nullable=False),
        sa.Column("paid_after_gap", sa.Boolean(), nullable=False),
        sa.Column("sponsorships", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(*_GROUP_COLUMNS, name=op.f("pk_coverage_group")),
    )
    postgresql = op.get_bind().dialect.name == "postgresql"
    op.execute(BACKFILL)
    op.execute(ASN_BACKFILL)
    op.execute(GROUP_BACKFILL.format(none="DATE '0001-01-01'" if postgresql else _SQLITE_NONE))
    statements = (
        _POSTGRESQL + _POSTGRESQL_ASN + _POSTGRESQL_GROUP
        if postgresql
        else _SQLITE + _SQLITE_ASN + _SQLITE_GROUP
    )
    for statement in statements:
        op.execute(statement)
    if postgresql:
        op.execute("ANALYZE asn")


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    drops = (
        _POSTGRESQL_GROUP_DROP + _POSTGRESQL_ASN_DROP + _POSTGRESQL_DROP
        if postgresql
        else _SQLITE_GROUP_DROP + _SQLITE_ASN_DROP + _SQLITE_DROP
    )
    for statement in drops:
        op.execute(statement)
    op.drop_table("coverage_group")
    with op.batch_alter_table("asn", schema=None) as batch_op:
        batch_op.drop_index("ix_asn_opd_open")
        batch_op.drop_column("open_sponsorships")
    with op.batch_alter_table("sponsorship", schema=None) as batch_op:
        batch_op.drop_index("ix_sponsorship_worker_status")
    op.drop_table("coverage_area")
