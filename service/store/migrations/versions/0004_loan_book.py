"""The loan book: calls linked to a customer and a loan, a compact per-call summary, customers (tier history,
encrypted contact details) and their follow-ups.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("customer_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("loan_id", sa.String(64), nullable=True))
    op.create_index("ix_calls_customer_id", "calls", ["customer_id"])
    op.create_table(
        "customers",
        sa.Column("customer_id", sa.String(64), primary_key=True),
        sa.Column("tier", sa.String(8), nullable=True),
        sa.Column("tier_since", sa.DateTime, nullable=True),
        sa.Column("contact_encrypted", sa.LargeBinary, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("planned_at", sa.DateTime, nullable=True),
    )
    op.create_index("ix_customers_tier", "customers", ["tier"])
    op.create_table(
        "customer_tiers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("customer_id", sa.String(64), sa.ForeignKey("customers.customer_id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("tier", sa.String(8), nullable=False),
        sa.Column("call_id", sa.String(128), nullable=True),
        sa.Column("reasons", sa.JSON, nullable=False),
    )
    op.create_index("ix_customer_tiers_customer_at", "customer_tiers", ["customer_id", "at"])
    op.create_table(
        "call_summaries",
        sa.Column("call_id", sa.String(128), sa.ForeignKey("calls.call_id", ondelete="CASCADE"), primary_key=True),
        sa.Column("customer_id", sa.String(64), nullable=True),
        sa.Column("loan_id", sa.String(64), nullable=True),
        sa.Column("agent_id", sa.String(64), nullable=True),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("risk_score", sa.Integer, nullable=False),
        sa.Column("tier", sa.String(8), nullable=False),
        sa.Column("facts", sa.JSON, nullable=False),
    )
    op.create_index("ix_call_summaries_customer_at", "call_summaries", ["customer_id", "at"])
    op.create_index("ix_call_summaries_agent_at", "call_summaries", ["agent_id", "at"])
    op.create_table(
        "followups",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("customer_id", sa.String(64), sa.ForeignKey("customers.customer_id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("loan_id", sa.String(64), nullable=True),
        sa.Column("due_date", sa.Date, nullable=False),
        sa.Column("channel", sa.String(8), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("topics", sa.JSON, nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("assignee", sa.String(64), nullable=True),
        sa.Column("outcome_note", sa.Text, nullable=True),
        sa.Column("call_id", sa.String(128), nullable=True),
        sa.Column("source_call_id", sa.String(128), nullable=True),
        sa.Column("plan_key", sa.String(256), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_followups_customer_id", "followups", ["customer_id"])
    op.create_index("ix_followups_status_due", "followups", ["status", "due_date"])
    op.create_index("ix_followups_assignee", "followups", ["assignee"])


def downgrade() -> None:
    op.drop_table("followups")
    op.drop_table("call_summaries")
    op.drop_table("customer_tiers")
    op.drop_table("customers")
    op.drop_index("ix_calls_customer_id", "calls")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("loan_id")
        batch.drop_column("customer_id")
