"""Sign-in attempts shared by every process, and the web queue's keyset index (issue 13).

`web_sign_in_attempt` holds one row per sign-in attempt of the last minute, keyed
by the SHA-256 of the client's address (the address itself is not kept); rows
older than the window are deleted by the next attempt (storage/web_access.py).
`ix_sponsorship_queue` serves the verification queue's keyset pages (an OPD's
waiting enrollments by their last status change, then id: storage/web_queries.py).

Revision ID: 0014_web
Revises: 0013_planner
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_web"
down_revision: str | Sequence[str] | None = "0013_planner"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "web_sign_in_attempt",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("address_hash", sa.String(length=64), nullable=False),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_sign_in_attempt")),
    )
    op.create_index(
        "ix_web_sign_in_attempt_address",
        "web_sign_in_attempt",
        ["address_hash", "attempted_at"],
        unique=False,
    )
    op.create_index(
        "ix_web_sign_in_attempt_at", "web_sign_in_attempt", ["attempted_at"], unique=False
    )

    op.create_index(
        "ix_sponsorship_queue",
        "sponsorship",
        ["opd_id", "status", "status_changed_at", "id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_sponsorship_queue", table_name="sponsorship")
    op.drop_index("ix_web_sign_in_attempt_at", table_name="web_sign_in_attempt")
    op.drop_index("ix_web_sign_in_attempt_address", table_name="web_sign_in_attempt")
    op.drop_table("web_sign_in_attempt")
