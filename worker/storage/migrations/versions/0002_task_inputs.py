"""Image tasks keep their stages and parameters, so a task can be run from its id alone.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def _json() -> sa.types.TypeEngine:  # type: ignore[type-arg]
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("image_edit_tasks") as table:
        table.add_column(sa.Column("stages", _json(), nullable=True))
        table.add_column(sa.Column("params", _json(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("image_edit_tasks") as table:
        table.drop_column("params")
        table.drop_column("stages")
