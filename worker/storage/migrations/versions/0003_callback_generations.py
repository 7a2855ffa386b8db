"""Callbacks and their attempts carry a generation: how often the callback was replayed from the dead letters.

Existing rows are generation 0 (the server default, which also covers rows a
writer of the previous version inserts during a rolling deploy).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

TABLES = ("callbacks", "callback_attempts")


def upgrade() -> None:
    for name in TABLES:
        with op.batch_alter_table(name) as table:
            table.add_column(sa.Column("generation", sa.Integer(), nullable=False, server_default=sa.text("0")))


def downgrade() -> None:
    for name in TABLES:
        with op.batch_alter_table(name) as table:
            table.drop_column("generation")
