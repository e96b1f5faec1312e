"""Each drift window's noise floor: the reference windows' divergence from each other.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("drift_windows", sa.Column("divergence_floor", sa.Float(), nullable=True))


def downgrade() -> None:
    op.drop_column("drift_windows", "divergence_floor")
