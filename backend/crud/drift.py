"""Drift windows: stored as trainers report them, read newest first."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.db.models import DriftWindowRow
from borealis.wire import DriftReport


def add(session: Session, report: DriftReport) -> DriftWindowRow:
    row = DriftWindowRow(**report.model_dump(exclude={"wire_version"}))
    session.add(row)
    session.commit()
    return row


def recent(session: Session, limit: int) -> list[DriftWindowRow]:
    rows = session.scalars(select(DriftWindowRow).order_by(DriftWindowRow.id.desc()).limit(limit))
    return list(reversed(list(rows)))
