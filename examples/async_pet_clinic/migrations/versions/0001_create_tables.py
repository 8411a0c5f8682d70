"""Owners and their pets, vets and their specialties.

Revision ID: 0001
Revises:
Created: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _uuid_key() -> sa.Column[object]:
    return sa.Column("id", sa.Uuid, primary_key=True, server_default=sa.func.gen_random_uuid())


def upgrade() -> None:
    op.create_table(
        "owner",
        _uuid_key(),
        sa.Column("name", sa.String(30), nullable=False),
        sa.Column("city", sa.String(80), nullable=False),
        sa.Column("telephone", sa.String(20)),
    )
    op.create_table(
        "pet",
        _uuid_key(),
        sa.Column("name", sa.String(30), nullable=False),
        sa.Column("birth_date", sa.Date, nullable=False),
        sa.Column("owner_id", sa.Uuid, sa.ForeignKey("owner.id"), nullable=False),
    )
    # CREATE INDEX ASYNC, waited for: the migration goes on once the index is built.
    op.create_index("ix_pet_owner_id", "pet", ["owner_id"])
    op.create_table("specialty", sa.Column("name", sa.String(80), primary_key=True))
    op.create_table(
        "vet",
        _uuid_key(),
        sa.Column("name", sa.String(30), nullable=False),
    )
    op.create_table(
        "vet_specialty",
        sa.Column("vet_id", sa.Uuid, sa.ForeignKey("vet.id"), primary_key=True),
        sa.Column(
            "specialty_name", sa.String(80), sa.ForeignKey("specialty.name"), primary_key=True
        ),
    )


def downgrade() -> None:
    for table in ("vet_specialty", "vet", "specialty", "pet", "owner"):
        op.drop_table(table)
