"""Worker registry reads and writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.db.models import Worker, utcnow
from borealis.wire import WorkerRegistration


def as_utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything here is stored in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def upsert_heartbeat(session: Session, beat: WorkerRegistration) -> Worker:
    worker = session.get(Worker, beat.worker_id)
    now = utcnow()
    if worker is None:
        worker = Worker(id=beat.worker_id, registered_at=now)
        session.add(worker)
    worker.url = beat.url
    worker.model = beat.model
    worker.draft_version = beat.draft_version
    worker.active_requests = beat.active_requests
    worker.max_context_tokens = beat.max_context_tokens
    worker.engine = beat.engine
    worker.fallback_reason = beat.fallback_reason
    worker.last_heartbeat_at = now
    session.commit()
    return worker


def list_workers(session: Session) -> list[Worker]:
    return list(session.scalars(select(Worker).order_by(Worker.id)))


def healthy_workers(session: Session, stale_after_s: float) -> list[Worker]:
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    return [w for w in list_workers(session) if as_utc(w.last_heartbeat_at) >= cutoff]


def is_healthy(worker: Worker, stale_after_s: float) -> bool:
    return as_utc(worker.last_heartbeat_at) >= utcnow() - timedelta(seconds=stale_after_s)
