"""At most one live draft version, enforced by the database (a partial unique index).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

LIVE_ONLY = sa.text("status = 'live'")


def upgrade() -> None:
    op.create_index(
        "uq_draft_versions_one_live",
        "draft_versions",
        ["status"],
        unique=True,
        sqlite_where=LIVE_ONLY,
        postgresql_where=LIVE_ONLY,
    )


def downgrade() -> None:
    op.drop_index("uq_draft_versions_one_live", table_name="draft_versions")
