"""Operator view of the inference workers."""

from __future__ import annotations

from fastapi import APIRouter

from backend.api.deps import AdminDep, SessionDep, SettingsDep
from backend.crud.workers import as_utc, is_healthy, list_workers
from backend.schemas.operator import WorkerView

router = APIRouter(prefix="/api/workers", tags=["operator"])


@router.get("", response_model=list[WorkerView])
def get_workers(session: SessionDep, settings: SettingsDep, _actor: AdminDep) -> list[WorkerView]:
    return [
        WorkerView(
            id=w.id,
            url=w.url,
            model=w.model,
            draft_version=w.draft_version,
            active_requests=w.active_requests,
            healthy=is_healthy(w, settings.worker_stale_seconds),
            last_heartbeat_at=as_utc(w.last_heartbeat_at),
            engine=w.engine,
            fallback_reason=w.fallback_reason,
        )
        for w in list_workers(session)
    ]
