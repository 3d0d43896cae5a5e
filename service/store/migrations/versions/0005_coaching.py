"""Coaching: one compact row per scored call (`agent_call_stats`), so scorecards over a month sum typed columns
instead of reading report JSON. Calls scored before this migration get their rows from `huifang coaching
rebuild` (docs/coaching.md).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agent_call_stats",
        sa.Column("call_id", sa.String(128), sa.ForeignKey("calls.call_id", ondelete="CASCADE"), primary_key=True),
        sa.Column("agent_id", sa.String(64), nullable=True),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("duration_s", sa.Float, nullable=False),
        sa.Column("coverage", sa.Float, nullable=False),
        sa.Column("topics_asked", sa.Integer, nullable=False),
        sa.Column("topics_total", sa.Integer, nullable=False),
        sa.Column("high_skipped", sa.Integer, nullable=False),
        sa.Column("prompts_shown", sa.Integer, nullable=False),
        sa.Column("prompts_followed", sa.Integer, nullable=False),
        sa.Column("prompts_clarified", sa.Integer, nullable=False),
        sa.Column("vague_unresolved", sa.Integer, nullable=False),
        sa.Column("mismatches_standing", sa.Integer, nullable=False),
        sa.Column("agent_talk_s", sa.Float, nullable=False),
        sa.Column("customer_talk_s", sa.Float, nullable=False),
        sa.Column("questions", sa.Integer, nullable=False),
        sa.Column("question_silence_s", sa.Float, nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
    )
    op.create_index("ix_agent_call_stats_agent_at", "agent_call_stats", ["agent_id", "at"])
    op.create_index("ix_agent_call_stats_at", "agent_call_stats", ["at"])


def downgrade() -> None:
    op.drop_table("agent_call_stats")
