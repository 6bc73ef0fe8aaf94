"""The Telegram inbound journal (issue 14, end-to-end latency).

`telegram_inbound` holds the updates long polling fetched and confirmed to
Telegram but did not handle yet (storage/telegram_inbound.py): the poller no
longer waits for a batch's slowest person before fetching the next.

Revision ID: 0016_tg_inbound
Revises: 0015_coverage_counts
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016_tg_inbound"
down_revision: str | Sequence[str] | None = "0015_coverage_counts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "telegram_inbound",
        sa.Column(
            "update_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("payload_ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("update_id", name=op.f("pk_telegram_inbound")),
    )


def downgrade() -> None:
    op.drop_table("telegram_inbound")
