"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from backend.api.deps import SessionDep, SettingsDep
from backend.crud.workers import healthy_workers
from backend.services.registry import desired_version
from borealis.version import package_version
from borealis.wire import WIRE_VERSION

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
    """Ready when a healthy worker serves the configured model: requests would be answered.

    Convergence to the desired draft is reported beside it (``converged``), not folded in: a probe
    that failed on every swap, or for good when a draft loads nowhere, would take the API down while
    the workers serve perfectly well on the previous draft.
    """
    healthy = healthy_workers(session, settings.worker_stale_seconds)
    workers = [w for w in healthy if w.model == settings.model_name]
    desired = desired_version(session)
    current = [w for w in workers if desired is None or w.draft_version == desired]
    body = {
        "ready": bool(workers),
        "converged": bool(workers) and len(current) == len(workers),
        "desired_draft_version": desired,
        "workers": [w.id for w in workers],
        "workers_on_desired": [w.id for w in current],
    }
    return JSONResponse(body, status_code=200 if workers else 503)


@router.get("/version")
def version() -> dict[str, object]:
    """What is running: the package version and the wire protocol version it speaks."""
    return {"version": package_version(), "wire_version": WIRE_VERSION}
