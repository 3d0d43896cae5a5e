"""Earlier versions of a call's report, kept when an admin replaces the call (issue #26).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "call_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("call_id", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("recording_id", sa.String(32), nullable=True),
        sa.Column("agent_id", sa.String(64), nullable=True),
        sa.Column("customer_id", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("replaced_at", sa.DateTime, nullable=False),
        sa.Column("report", sa.JSON, nullable=False),
    )
    op.create_index("ix_call_versions_call_id", "call_versions", ["call_id"])
    op.create_index("ix_call_versions_customer_id", "call_versions", ["customer_id"])


def downgrade() -> None:
    op.drop_table("call_versions")
