"""The coverage page read afresh: paid-until kept on the sponsorship, and indexes.

`sponsorship.paid_until` / `paid_after_gap` are derived from the confirmed
payments (`domain.dues.PaidRun`) and written only by `storage.paid_until.settle`,
which also fills them here for every sponsorship (the backfill). The indexes let
the coverage page count workers and the paid-until distribution per OPD from one
of them alone, and its weekly series read ranges of the other three (see
docs/ARCHITECTURE.md, "Coverage read afresh").

Revision ID: 0014_coverage
Revises: 0014_web
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from storage.paid_until import settle

revision: str = "0014_coverage"
down_revision: str | Sequence[str] | None = "0014_web"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sponsorship", schema=None) as batch_op:
        batch_op.add_column(sa.Column("paid_until", sa.Date(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "paid_after_gap", sa.Boolean(), server_default=sa.text("false"), nullable=False
            )
        )
        batch_op.create_index(
            "ix_sponsorship_coverage",
            ["status", "opd_id", "paid_until", "first_month", "paid_after_gap", "worker_id"],
            unique=False,
        )
        batch_op.create_index("ix_sponsorship_created_at", ["created_at"], unique=False)
        batch_op.create_index("ix_sponsorship_kpj_imported_at", ["kpj_imported_at"], unique=False)
        batch_op.create_index(
            "ix_sponsorship_status_changed", ["status", "status_changed_at"], unique=False
        )
    bind = op.get_bind()
    settle(bind)
    if bind.dialect.name == "postgresql":
        # Every sponsorship row was just rewritten: fresh statistics for the planner.
        op.execute("ANALYZE sponsorship")


def downgrade() -> None:
    with op.batch_alter_table("sponsorship", schema=None) as batch_op:
        batch_op.drop_index("ix_sponsorship_status_changed")
        batch_op.drop_index("ix_sponsorship_kpj_imported_at")
        batch_op.drop_index("ix_sponsorship_created_at")
        batch_op.drop_index("ix_sponsorship_coverage")
        batch_op.drop_column("paid_after_gap")
        batch_op.drop_column("paid_until")
