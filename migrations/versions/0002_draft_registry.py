"""Draft registry, control state, credentials.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "draft_versions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.Integer(), nullable=False, unique=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("parent_id", sa.String(64), sa.ForeignKey("draft_versions.id"), nullable=True),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("promoted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("artifact_sha256", sa.String(64), nullable=False),
        sa.Column("artifact_bytes", sa.BigInteger(), nullable=False),
        sa.Column("artifact_uploaded", sa.Boolean(), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("data_window", sa.JSON(), nullable=False),
        sa.Column("training_metrics", sa.JSON(), nullable=False),
        sa.Column("shadow_eval", sa.JSON(), nullable=False),
        sa.Column("live_eval", sa.JSON(), nullable=False),
    )
    op.create_index("ix_draft_versions_status", "draft_versions", ["status"])
    op.create_table(
        "control_state",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "credentials",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_credentials_kind", "credentials", ["kind"])


def downgrade() -> None:
    op.drop_index("ix_credentials_kind", "credentials")
    op.drop_table("credentials")
    op.drop_table("control_state")
    op.drop_index("ix_draft_versions_status", "draft_versions")
    op.drop_table("draft_versions")
