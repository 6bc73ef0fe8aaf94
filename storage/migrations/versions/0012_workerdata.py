"""What BPJS needs about a worker: relationship and occupation apart, place of birth, address.

`sponsorship.relationship_to_asn` is new and `occupation` may now be NULL: the
old column mixed the two. Existing rows: a family member becomes relationship
"family" with no occupation (the collective file shows it blank, and the PIC
can return the enrollment to ask for it); household assistants, garden
workers, drivers and house guards work for the ASN's household ("employee");
the other occupations stay, relationship "other". `occupation_text` holds
the occupation typed after "other" (none before). The worker's place of birth,
street address and regency are new and empty for existing rows.

Revision ID: 0012
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_EMPLOYED = ("household_assistant", "garden_worker", "driver", "house_guard")


def upgrade() -> None:
    with op.batch_alter_table("sponsorship", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "relationship_to_asn",
                sa.String(length=32),
                nullable=False,
                server_default="other",
            )
        )
        batch_op.add_column(sa.Column("occupation_text", sa.String(length=60), nullable=True))
        batch_op.alter_column("occupation", existing_type=sa.String(length=32), nullable=True)
    sponsorship = sa.table(
        "sponsorship",
        sa.column("relationship_to_asn", sa.String),
        sa.column("occupation", sa.String),
    )
    op.execute(
        sponsorship.update()
        .where(sponsorship.c.occupation == "family_member")
        .values(relationship_to_asn="family", occupation=None)
    )
    op.execute(
        sponsorship.update()
        .where(sponsorship.c.occupation.in_(_EMPLOYED))
        .values(relationship_to_asn="employee")
    )
    with op.batch_alter_table("worker", schema=None) as batch_op:
        batch_op.add_column(sa.Column("birth_place", sa.String(length=120), nullable=True))
        batch_op.add_column(sa.Column("street_address", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("regency", sa.String(length=120), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("worker", schema=None) as batch_op:
        batch_op.drop_column("regency")
        batch_op.drop_column("street_address")
        batch_op.drop_column("birth_place")
    sponsorship = sa.table(
        "sponsorship",
        sa.column("relationship_to_asn", sa.String),
        sa.column("occupation", sa.String),
    )
    # The old column mixed the two: a family member without an occupation is "family_member".
    op.execute(
        sponsorship.update()
        .where(sponsorship.c.occupation.is_(None))
        .values(occupation="family_member")
    )
    with op.batch_alter_table("sponsorship", schema=None) as batch_op:
        batch_op.alter_column("occupation", existing_type=sa.String(length=32), nullable=False)
        batch_op.drop_column("occupation_text")
        batch_op.drop_column("relationship_to_asn")
