"""Vets say whether they accept new patients (a NOT NULL column with a default).

DSQL cannot add a column with DEFAULT or NOT NULL in one statement.
sqlalchemy_dsql.alembic turns this one op.add_column into: add the column
nullable, set its default, write the default into the rows already there in
transactions of 1,000 rows, then add and validate CHECK (accepting_patients
IS NOT NULL).

Revision ID: 0002
Revises: 0001
Created: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "vet",
        sa.Column("accepting_patients", sa.Boolean, nullable=False, server_default=sa.true()),
    )


def downgrade() -> None:
    op.drop_column("vet", "accepting_patients")
