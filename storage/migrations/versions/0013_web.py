"""The web workbench (issue 13): program leaders, one-time sign-in links, web sessions.

Revision ID: 0013_web
Revises: 0012
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_web"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "program_leader",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel_account_id", sa.Integer(), nullable=False),
        sa.Column("appointed_by", sa.String(length=120), nullable=False),
        sa.Column("appointed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("removed_by", sa.String(length=120), nullable=True),
        sa.ForeignKeyConstraint(
            ["channel_account_id"],
            ["channel_account.id"],
            name=op.f("fk_program_leader_channel_account_id_channel_account"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_program_leader")),
    )
    with op.batch_alter_table("program_leader", schema=None) as batch_op:
        batch_op.create_index(
            "uq_program_leader_active_account",
            ["channel_account_id"],
            unique=True,
            sqlite_where=sa.text("removed_at IS NULL"),
            postgresql_where=sa.text("removed_at IS NULL"),
        )
    for table in ("web_sign_in_link", "web_session"):
        columns: list[sa.schema.SchemaItem] = [
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("token_hash", sa.String(length=64), nullable=False),
            sa.Column("role", sa.String(length=16), nullable=False),
            sa.Column("channel_account_id", sa.Integer(), nullable=True),
            sa.Column("admin_login", sa.String(length=120), nullable=True),
        ]
        if table == "web_sign_in_link":
            columns += [
                sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
                sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
                sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
            ]
        else:
            columns += [
                sa.Column("csrf_token", sa.String(length=64), nullable=False),
                sa.Column("language", sa.String(length=8), nullable=False),
                sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
                sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
                sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
            ]
        op.create_table(
            table,
            *columns,
            sa.ForeignKeyConstraint(
                ["channel_account_id"],
                ["channel_account.id"],
                name=op.f(f"fk_{table}_channel_account_id_channel_account"),
            ),
            sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}")),
            sa.UniqueConstraint("token_hash", name=op.f(f"uq_{table}_token_hash")),
        )


def downgrade() -> None:
    op.drop_table("web_session")
    op.drop_table("web_sign_in_link")
    with op.batch_alter_table("program_leader", schema=None) as batch_op:
        batch_op.drop_index("uq_program_leader_active_account")
    op.drop_table("program_leader")
