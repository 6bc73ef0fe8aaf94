"""Drop `ix_sponsorship_opd_status`: `ix_sponsorship_queue` begins with the same columns.

`ix_sponsorship_opd_status` (opd_id, status) is the prefix of
`ix_sponsorship_queue` (opd_id, status, status_changed_at, id, migration
0014), which serves every look-up the shorter one did. Each status change
wrote an entry into both; the reminder planner changes the status of
hundreds of thousands of sponsorships in a province's first run, and every
enrollment, verification and end writes one too.

Revision ID: 0018_opd_status_index
Revises: 0017_pgplan
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0018_opd_status_index"
down_revision: str | None = "0017_pgplan"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_sponsorship_opd_status", table_name="sponsorship")


def downgrade() -> None:
    op.create_index("ix_sponsorship_opd_status", "sponsorship", ["opd_id", "status"], unique=False)
