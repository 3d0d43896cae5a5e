"""The outbox: messages to customers (SMS, e-mail, letters through the CRM), their delivery attempts and leases.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox_messages",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("customer_id", sa.String(64), sa.ForeignKey("customers.customer_id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("followup_id", sa.String(32), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(8), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("idempotency_key", sa.String(64), nullable=False, unique=True),
        sa.Column("destination_encrypted", sa.LargeBinary, nullable=True),
        sa.Column("destination_masked", sa.String(128), nullable=True),
        sa.Column("subject", sa.Text, nullable=True),
        sa.Column("body", sa.Text, nullable=True),
        sa.Column("not_before", sa.DateTime, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime, nullable=True),
        sa.Column("last_error", sa.String(200), nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime, nullable=True),
        sa.Column("lease_version", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("sent_at", sa.DateTime, nullable=True),
    )
    op.create_index("ix_outbox_messages_customer_id", "outbox_messages", ["customer_id"])
    op.create_index("ix_outbox_messages_status_next", "outbox_messages", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_table("outbox_messages")
