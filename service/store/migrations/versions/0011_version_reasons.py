"""Why each kept earlier report of a call was replaced (`call_versions.reason`). When an admin replaces a call,
the reports its re-scorings, re-decodings and reviews kept (`report_versions`, each with a reason) are copied into
`call_versions`; from this revision on they keep their reason there. Rows copied before have none (listed as
`replace`).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("call_versions") as batch:
        batch.add_column(sa.Column("reason", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("call_versions") as batch:
        batch.drop_column("reason")
