"""Recordings, scored calls and their answers.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "recordings",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("call_id", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("progress", sa.Float, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=True),
        sa.Column("finished_at", sa.DateTime, nullable=True),
        sa.Column("files", sa.JSON, nullable=False),
        sa.Column("loan_file", sa.JSON, nullable=True),
        sa.Column("agent_id", sa.String(64), nullable=True),
    )
    op.create_index("ix_recordings_call_id", "recordings", ["call_id"])
    op.create_index("ix_recordings_status", "recordings", ["status"])
    op.create_index("ix_recordings_created_at", "recordings", ["created_at"])
    op.create_table(
        "calls",
        sa.Column("call_id", sa.String(128), primary_key=True),
        sa.Column("recording_id", sa.String(32), nullable=True),
        sa.Column("agent_id", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("duration_s", sa.Float, nullable=False),
        sa.Column("risk_score", sa.Integer, nullable=False),
        sa.Column("tier", sa.String(8), nullable=False),
        sa.Column("report", sa.JSON, nullable=False),
        sa.Column("audio_dir", sa.String(256), nullable=True),
        sa.Column("audio_expires_at", sa.DateTime, nullable=True),
    )
    for column in ("agent_id", "created_at", "risk_score", "tier", "audio_expires_at"):
        op.create_index(f"ix_calls_{column}", "calls", [column])
    op.create_table(
        "answers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("call_id", sa.String(128), sa.ForeignKey("calls.call_id", ondelete="CASCADE"), nullable=False),
        sa.Column("topic", sa.String(32), nullable=False),
        sa.Column("label", sa.String(16), nullable=False),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("mismatch", sa.Boolean, nullable=False),
        sa.Column("start_s", sa.Float, nullable=True),
        sa.Column("end_s", sa.Float, nullable=True),
    )
    op.create_index("ix_answers_call_id", "answers", ["call_id"])
    op.create_index("ix_answers_label_call", "answers", ["label", "call_id"])


def downgrade() -> None:
    op.drop_table("answers")
    op.drop_table("calls")
    op.drop_table("recordings")
