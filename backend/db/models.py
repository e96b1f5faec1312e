"""SQLAlchemy 2 models of the control plane's state (same schema on SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Worker(Base):
    """An inference worker as last reported by its heartbeat."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    url: Mapped[str] = mapped_column(String(512))
    model: Mapped[str] = mapped_column(String(256))
    draft_version: Mapped[str | None] = mapped_column(String(128), nullable=True)
    active_requests: Mapped[int] = mapped_column(Integer, default=0)
    max_context_tokens: Mapped[int] = mapped_column(Integer)
    engine: Mapped[str] = mapped_column(String(32), default="spec", server_default="spec")
    fallback_reason: Mapped[str] = mapped_column(String(300), default="", server_default="")
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class AuditEntry(Base):
    """Who did what, when and why: every operator and automatic action."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(256), default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class DraftVersion(Base):
    """One draft model version: its artifact, lineage, evaluations and lifecycle status."""

    __tablename__ = "draft_versions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, unique=True)
    status: Mapped[str] = mapped_column(String(32), index=True)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("draft_versions.id"), nullable=True)
    source: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    promoted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    artifact_sha256: Mapped[str] = mapped_column(String(64))
    artifact_bytes: Mapped[int] = mapped_column(BigInteger)
    artifact_uploaded: Mapped[bool] = mapped_column(default=False)
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    data_window: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    training_metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    shadow_eval: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    live_eval: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    tags: Mapped[dict[str, str]] = mapped_column(JSON, default=dict, server_default="{}")  # operator's
    note: Mapped[str] = mapped_column(Text, default="", server_default="")  # operator's free text

    __table_args__ = (  # at most one live version, whatever races the operators and policy run
        Index(
            "uq_draft_versions_one_live",
            "status",
            unique=True,
            sqlite_where=text("status = 'live'"),
            postgresql_where=text("status = 'live'"),
        ),
    )


class ControlState(Base):
    """Small pieces of operator state (desired version, learning, approval policy), one row each."""

    __tablename__ = "control_state"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class Credential(Base):
    """An admin credential or inference API key; only its sha256 is stored."""

    __tablename__ = "credentials"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    name: Mapped[str] = mapped_column(String(128))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class DriftWindowRow(Base):
    """A closed drift window as a trainer reported it (acceptance, divergence, domain mix, shift)."""

    __tablename__ = "drift_windows"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    trainer: Mapped[str] = mapped_column(String(128))
    index: Mapped[int] = mapped_column(Integer)
    requests: Mapped[int] = mapped_column(Integer)
    tokens: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float] = mapped_column(Float)
    domain_mix: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    acceptance_by_domain: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    divergence: Mapped[float | None] = mapped_column(Float, nullable=True)
    divergence_floor: Mapped[float | None] = mapped_column(Float, nullable=True)
    mix_shift: Mapped[float | None] = mapped_column(Float, nullable=True)
    js_threshold: Mapped[float] = mapped_column(Float)
    mix_threshold: Mapped[float] = mapped_column(Float)
    shift: Mapped[bool] = mapped_column(Boolean)
