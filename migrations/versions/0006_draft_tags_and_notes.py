"""Operator tags and a note on each draft version (MLflow users annotate versions this way).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("draft_versions", sa.Column("tags", sa.JSON(), nullable=False, server_default="{}"))
    op.add_column("draft_versions", sa.Column("note", sa.Text(), nullable=False, server_default=""))


def downgrade() -> None:
    op.drop_column("draft_versions", "note")
    op.drop_column("draft_versions", "tags")
