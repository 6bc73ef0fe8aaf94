"""WhatsApp journal: the message's own timestamp (a sender's rows go in sent order), by sender.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("whatsapp_inbound", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_whatsapp_inbound_sender", ["sender_id", "sent_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("whatsapp_inbound", schema=None) as batch_op:
        batch_op.drop_index("ix_whatsapp_inbound_sender")
        batch_op.drop_column("sent_at")
