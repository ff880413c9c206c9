"""videos.frame_offset: how far a sampled frame may have been from its target (reference-frame decoding).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("videos") as batch:  # batch: SQLite cannot alter tables in place
        batch.add_column(sa.Column("frame_offset", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("videos") as batch:
        batch.drop_column("frame_offset")
