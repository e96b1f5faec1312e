"""Alembic migrations: upgrade/downgrade on SQLite and PostgreSQL, and models match the schema."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from backend.db.migrate import downgrade, upgrade
from backend.db.models import Base
from backend.db.session import make_engine


def test_upgrade_creates_schema_matching_the_models(database_url: str) -> None:
    upgrade(database_url)
    engine = make_engine(database_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], f"models and migrations disagree: {diff}"
        assert {"workers", "audit_log", "alembic_version"} <= set(inspect(conn).get_table_names())
    engine.dispose()


def test_downgrade_to_base_and_back(database_url: str) -> None:
    upgrade(database_url)
    downgrade(database_url, "base")
    engine = make_engine(database_url)
    with engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
    engine.dispose()
    upgrade(database_url)
    engine = make_engine(database_url)
    with engine.connect() as conn:
        assert "workers" in inspect(conn).get_table_names()
    engine.dispose()
