"""Every worker can consent (issue 12 item 12): how consent was asked and given,
Telegram consent links (hashed tokens), the signed form's scan.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sponsorship", schema=None) as batch_op:
        batch_op.add_column(sa.Column("consent_requested_via", sa.String(32), nullable=True))
        batch_op.add_column(
            sa.Column("consent_requested_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("consent_method", sa.String(32), nullable=True))
    with op.batch_alter_table("consent_record", schema=None) as batch_op:
        batch_op.add_column(sa.Column("method", sa.String(32), nullable=True))
        batch_op.add_column(sa.Column("evidence_file_ref", sa.String(200), nullable=True))
    # Requests already sent went out on WhatsApp (the only way before this revision).
    op.execute(
        "UPDATE sponsorship SET consent_requested_via = 'whatsapp', "
        "consent_requested_at = created_at WHERE worker_consent <> 'not_requested'"
    )
    op.execute(
        "UPDATE sponsorship SET consent_method = 'whatsapp' "
        "WHERE worker_consent IN ('given', 'refused')"
    )
    op.execute("UPDATE consent_record SET method = 'whatsapp' WHERE purpose = 'worker_enrollment'")
    op.create_table(
        "consent_link",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sponsorship_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("created_by_account_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["sponsorship_id"],
            ["sponsorship.id"],
            name=op.f("fk_consent_link_sponsorship_id_sponsorship"),
        ),
        sa.ForeignKeyConstraint(
            ["created_by_account_id"],
            ["channel_account.id"],
            name=op.f("fk_consent_link_created_by_account_id_channel_account"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_link")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_consent_link_token_hash")),
    )
    op.create_index(
        op.f("ix_consent_link_sponsorship_id"), "consent_link", ["sponsorship_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_consent_link_sponsorship_id"), table_name="consent_link")
    op.drop_table("consent_link")
    with op.batch_alter_table("consent_record", schema=None) as batch_op:
        batch_op.drop_column("evidence_file_ref")
        batch_op.drop_column("method")
    with op.batch_alter_table("sponsorship", schema=None) as batch_op:
        batch_op.drop_column("consent_method")
        batch_op.drop_column("consent_requested_at")
        batch_op.drop_column("consent_requested_via")
