"""One planner across processes: a lease row and a record per planning run attempt.

`planner_run` holds, per job and run (the local date), every attempt: who ran
it, when, how far it got, what it wrote. A partial unique index keeps one
attempt `running` per run (the lease); see `storage/planner_runs.py`.

Revision ID: 0013_planner
Revises: 0013_budget
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_planner"
down_revision: str | Sequence[str] | None = "0013_budget"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "planner_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job", sa.String(length=32), nullable=False),
        sa.Column("run_key", sa.String(length=32), nullable=False),
        sa.Column("owner", sa.String(length=120), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("chunks", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("rows", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_planner_run")),
    )
    op.create_index("ix_planner_run_job_key", "planner_run", ["job", "run_key"], unique=False)
    op.create_index(
        "uq_planner_run_running",
        "planner_run",
        ["job", "run_key"],
        unique=True,
        sqlite_where=sa.text("status = 'running'"),
        postgresql_where=sa.text("status = 'running'"),
    )


def downgrade() -> None:
    op.drop_index("uq_planner_run_running", table_name="planner_run")
    op.drop_index("ix_planner_run_job_key", table_name="planner_run")
    op.drop_table("planner_run")
