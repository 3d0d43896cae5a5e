"""Report versions: a call's earlier reports, kept when a newer one takes their place (`huifang rescore` with a
newer assessor, reason `rescore`; a re-upload, reason `replace`), each with the assessor version that made it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "report_versions",
        sa.Column("call_id", sa.String(128), sa.ForeignKey("calls.call_id", ondelete="CASCADE"), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("assessor_version", sa.String(128), nullable=False),
        sa.Column("report", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("report_versions")
