"""Initial catalog: libraries, videos, clips, texts.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "libraries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("root", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_libraries"),
        sa.UniqueConstraint("root", name="uq_libraries_root"),
    )
    op.create_table(
        "videos",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("library_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mtime_ns", sa.BigInteger(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("fps", sa.Float(), nullable=True),
        sa.Column("num_frames", sa.Integer(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("codec", sa.String(32), nullable=True),
        sa.Column("rotation", sa.Integer(), nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("clip_seconds", sa.Float(), nullable=True),
        sa.Column("stride", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("indexed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["library_id"], ["libraries.id"], name="fk_videos_library_id_libraries", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_videos"),
        sa.UniqueConstraint("path", name="uq_videos_path"),
    )
    op.create_index("ix_videos_library_id", "videos", ["library_id"])
    op.create_index("ix_videos_status", "videos", ["status"])
    op.create_table(
        "clips",
        sa.Column("id", _Id, nullable=False),
        sa.Column("video_id", sa.Integer(), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("start", sa.Float(), nullable=False),
        sa.Column("end", sa.Float(), nullable=False),
        sa.Column("start_frame", sa.Integer(), nullable=False),
        sa.Column("end_frame", sa.Integer(), nullable=False),
        sa.Column("thumbnail", sa.String(255), nullable=True),
        sa.ForeignKeyConstraint(["video_id"], ["videos.id"], name="fk_clips_video_id_videos", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_clips"),
        sa.UniqueConstraint("video_id", "idx", name="uq_clips_video_id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_clips_video_id", "clips", ["video_id"])
    op.create_table(
        "texts",
        sa.Column("id", _Id, nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("text_hash", sa.String(40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_texts"),
        sa.UniqueConstraint("text_hash", name="uq_texts_text_hash"),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("texts")
    op.drop_index("ix_clips_video_id", table_name="clips")
    op.drop_table("clips")
    op.drop_index("ix_videos_status", table_name="videos")
    op.drop_index("ix_videos_library_id", table_name="videos")
    op.drop_table("videos")
    op.drop_table("libraries")
