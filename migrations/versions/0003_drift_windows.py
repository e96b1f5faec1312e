"""Drift windows reported by trainers.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "drift_windows",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("trainer", sa.String(128), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("tokens", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float(), nullable=False),
        sa.Column("domain_mix", sa.JSON(), nullable=False),
        sa.Column("acceptance_by_domain", sa.JSON(), nullable=False),
        sa.Column("divergence", sa.Float(), nullable=True),
        sa.Column("mix_shift", sa.Float(), nullable=True),
        sa.Column("js_threshold", sa.Float(), nullable=False),
        sa.Column("mix_threshold", sa.Float(), nullable=False),
        sa.Column("shift", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_drift_windows_received_at", "drift_windows", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_drift_windows_received_at", "drift_windows")
    op.drop_table("drift_windows")
