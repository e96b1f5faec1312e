"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from backend.api.deps import SessionDep, SettingsDep
from backend.crud.workers import healthy_workers

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
    """Ready to serve when at least one healthy worker serves the configured model."""
    workers = [
        w for w in healthy_workers(session, settings.worker_stale_seconds) if w.model == settings.model_name
    ]
    body = {"ready": bool(workers), "workers": [w.id for w in workers]}
    return JSONResponse(body, status_code=200 if workers else 503)
