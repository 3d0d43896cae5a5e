"""Live calls in the books (issue #29): where a stored call came from, whether it ended cleanly, the finals a
live call writes as they come (what survives a crash of its replica), and the kind of a job (scoring a recording,
or re-decoding a live call's degraded finals after it).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("recordings") as batch:
        batch.add_column(sa.Column("source", sa.String(8), nullable=False, server_default="upload"))
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="score"))
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("source", sa.String(8), nullable=False, server_default="upload"))
        batch.add_column(sa.Column("complete", sa.Boolean, nullable=False, server_default=sa.true()))
    op.create_table(
        "live_finals",
        sa.Column("recording_id", sa.String(32), sa.ForeignKey("recordings.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("utterance_id", sa.String(40), nullable=False),
        sa.Column("start_s", sa.Float, nullable=False),
        sa.Column("end_s", sa.Float, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("masked", sa.Boolean, nullable=False),
        sa.Column("degraded", sa.Boolean, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("live_finals")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("complete")
        batch.drop_column("source")
    with op.batch_alter_table("recordings") as batch:
        batch.drop_column("kind")
        batch.drop_column("source")
