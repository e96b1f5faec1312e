"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from backend.api.deps import SessionDep, SettingsDep
from backend.crud.workers import healthy_workers
from backend.services.registry import desired_version

router = APIRouter(tags=["health"])


@router.get("/health")
def health(session: SessionDep) -> JSONResponse:
    """Alive when the process answers and the database does."""
    try:
        session.execute(text("SELECT 1"))
    except Exception as exc:  # any driver error means not healthy
        return JSONResponse({"status": "error", "database": str(exc)[:200]}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/ready")
def ready(session: SessionDep, settings: SettingsDep) -> JSONResponse:
    """Ready when a healthy worker serves the configured model and holds the desired draft version."""
    healthy = healthy_workers(session, settings.worker_stale_seconds)
    workers = [w for w in healthy if w.model == settings.model_name]
    desired = desired_version(session)
    current = [w for w in workers if desired is None or w.draft_version == desired]
    body = {
        "ready": bool(current),
        "desired_draft_version": desired,
        "workers": [w.id for w in workers],
        "workers_on_desired": [w.id for w in current],
    }
    return JSONResponse(body, status_code=200 if current else 503)
