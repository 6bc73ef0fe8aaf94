"""Sponsorship: the last month a stopped sponsorship covers (the ASN's "stop sponsoring").

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sponsorship", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ended_month", sa.Date(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sponsorship", schema=None) as batch_op:
        batch_op.drop_column("ended_month")
