"""The audit log: append-only record of operator and automatic actions."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.db.models import AuditEntry


def record(
    session: Session,
    actor: str,
    action: str,
    target: str = "",
    reason: str = "",
    details: dict[str, Any] | None = None,
    commit: bool = True,
) -> AuditEntry:
    entry = AuditEntry(actor=actor, action=action, target=target, reason=reason, details=details or {})
    session.add(entry)
    if commit:
        session.commit()
    return entry


def entries(session: Session, limit: int, offset: int = 0, action: str | None = None) -> list[AuditEntry]:
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit).offset(offset)
    if action:
        query = query.where(AuditEntry.action == action)
    return list(session.scalars(query))
