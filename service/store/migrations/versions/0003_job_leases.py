"""Leases on running jobs: owner, expiry and a version that fences completion.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("recordings") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(64), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime, nullable=True))
        batch.add_column(sa.Column("lease_version", sa.Integer, nullable=False, server_default="0"))
    op.create_index("ix_recordings_lease_expires_at", "recordings", ["lease_expires_at"])


def downgrade() -> None:
    op.drop_index("ix_recordings_lease_expires_at", "recordings")
    with op.batch_alter_table("recordings") as batch:
        batch.drop_column("lease_version")
        batch.drop_column("lease_expires_at")
        batch.drop_column("lease_owner")
