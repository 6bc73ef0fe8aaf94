"""The shared send budget: one schedule row per channel, one spacing row per recipient.

Used on PostgreSQL only (storage/send_budget.py: every process draws on the
same Telegram and WhatsApp rates); SQLite keeps the schedule in memory, the
tables stay empty there. On PostgreSQL both are UNLOGGED: a take's commit
then waits for no WAL flush (its time would make sends start late, unevenly),
and after a crash an empty schedule is right anyway.

Revision ID: 0013_budget
Revises: 0013_web
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_budget"
down_revision: str | Sequence[str] | None = "0013_web"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    unlogged = ["UNLOGGED"] if op.get_bind().dialect.name == "postgresql" else []
    op.create_table(
        "send_budget",
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("tat", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("channel", name=op.f("pk_send_budget")),
        prefixes=unlogged,
    )
    op.create_table(
        "send_spacing",
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("recipient", sa.String(length=64), nullable=False),
        sa.Column("free_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("channel", "recipient", name=op.f("pk_send_spacing")),
        prefixes=unlogged,
    )


def downgrade() -> None:
    op.drop_table("send_spacing")
    op.drop_table("send_budget")
