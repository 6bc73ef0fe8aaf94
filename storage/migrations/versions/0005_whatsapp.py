"""WhatsApp: the inbound journal, delivery statuses on the outbox, workers by phone, erasure.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


#: Columns holding a person's channel id: (table, column, nullable).
_PERSON_IDS = (
    ("channel_account", "external_id", False),
    ("outbox", "recipient", False),
    ("failed_update", "sender_id", True),
)


def upgrade() -> None:
    op.create_table(
        "whatsapp_inbound",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("message_id", sa.String(length=128), nullable=False),
        sa.Column("sender_id", sa.String(length=160), nullable=False),
        sa.Column("payload_ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_whatsapp_inbound")),
        sa.UniqueConstraint("message_id", name=op.f("uq_whatsapp_inbound_message_id")),
    )
    with op.batch_alter_table("whatsapp_inbound", schema=None) as batch_op:
        batch_op.create_index("ix_whatsapp_inbound_pending", ["processed_at", "id"], unique=False)

    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("provider_message_id", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("delivery_status", sa.String(length=32), nullable=True))
        batch_op.add_column(
            sa.Column("delivery_status_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column(
                "template_only", sa.Boolean(), server_default=sa.text("false"), nullable=False
            )
        )
        batch_op.create_index(
            batch_op.f("ix_outbox_provider_message_id"), ["provider_message_id"], unique=False
        )

    # Room for WhatsApp's business-scoped user ids (up to ~132 characters).
    for table, column, nullable in _PERSON_IDS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(
                column,
                existing_type=sa.String(length=64),
                type_=sa.String(length=160),
                existing_nullable=nullable,
            )

    with op.batch_alter_table("worker", schema=None) as batch_op:
        batch_op.add_column(sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f("ix_worker_phone_e164"), ["phone_e164"], unique=False)


def downgrade() -> None:
    for table, column, nullable in _PERSON_IDS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(
                column,
                existing_type=sa.String(length=160),
                type_=sa.String(length=64),
                existing_nullable=nullable,
            )
    with op.batch_alter_table("worker", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_worker_phone_e164"))
        batch_op.drop_column("erased_at")

    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_provider_message_id"))
        batch_op.drop_column("template_only")
        batch_op.drop_column("delivery_status_at")
        batch_op.drop_column("delivery_status")
        batch_op.drop_column("provider_message_id")

    with op.batch_alter_table("whatsapp_inbound", schema=None) as batch_op:
        batch_op.drop_index("ix_whatsapp_inbound_pending")

    op.drop_table("whatsapp_inbound")
