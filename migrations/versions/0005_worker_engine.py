"""Which engine each inference worker runs, and why it fell back when it did.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("workers", sa.Column("engine", sa.String(32), nullable=False, server_default="spec"))
    op.add_column("workers", sa.Column("fallback_reason", sa.String(300), nullable=False, server_default=""))


def downgrade() -> None:
    op.drop_column("workers", "fallback_reason")
    op.drop_column("workers", "engine")
