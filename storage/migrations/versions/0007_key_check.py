"""The NIK key's id and check value, so a wrong key is refused at start (issue 11).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Filled at the next start by `storage.key_check.confirm`, after it checked
    # that the key decrypts what is already stored.
    op.create_table(
        "key_check",
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("kcv", sa.LargeBinary(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_key_check")),
    )


def downgrade() -> None:
    op.drop_table("key_check")
