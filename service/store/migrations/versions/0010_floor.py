"""The floor (issue #31): supervisors' notes to agents during live calls, and agents' verdicts on prompts with
their review.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "call_notes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("call_id", sa.String(128), nullable=False, index=True),
        sa.Column("agent_id", sa.String(64), nullable=True),
        sa.Column("author", sa.String(64), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False, index=True),
    )
    op.create_table(
        "prompt_feedback",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("call_id", sa.String(128), nullable=False, index=True),
        sa.Column("question_utterance_id", sa.String(40), nullable=False),
        sa.Column("topic", sa.String(32), nullable=False, index=True),
        sa.Column("label", sa.String(16), nullable=False),
        sa.Column("prompt_text", sa.Text, nullable=False),
        sa.Column("assessor_version", sa.String(128), nullable=True),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(16), nullable=True),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("question_text", sa.Text, nullable=True),
        sa.Column("answer_text", sa.Text, nullable=True),
        sa.Column("agent_id", sa.String(64), nullable=True, index=True),
        sa.Column("author", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False, index=True),
        sa.Column("review_status", sa.String(16), nullable=False, index=True),
        sa.Column("reviewer", sa.String(64), nullable=True),
        sa.Column("reviewed_at", sa.DateTime, nullable=True, index=True),
        sa.Column("reviewer_label", sa.String(16), nullable=True),
        sa.Column("reviewer_topic", sa.String(32), nullable=True),
        sa.Column("review_note", sa.Text, nullable=True),
    )
    op.create_index("ix_prompt_feedback_prompt", "prompt_feedback", ["call_id", "question_utterance_id", "topic"],
                    unique=True)


def downgrade() -> None:
    op.drop_index("ix_prompt_feedback_prompt", table_name="prompt_feedback")
    op.drop_table("prompt_feedback")
    op.drop_table("call_notes")
