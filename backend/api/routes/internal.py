"""Endpoints the inference workers call (wire contract in borealis.wire)."""

from __future__ import annotations

from fastapi import APIRouter

from backend.api.deps import SessionDep
from backend.api.errors import APIError
from backend.crud.workers import upsert_heartbeat
from borealis.wire import WIRE_VERSION, WorkerRegistration

router = APIRouter(prefix="/internal", tags=["internal"])


@router.post("/workers/heartbeat")
def worker_heartbeat(beat: WorkerRegistration, session: SessionDep) -> dict[str, object]:
    if beat.wire_version != WIRE_VERSION:
        raise APIError(400, f"wire version {beat.wire_version} is not {WIRE_VERSION}", param="wire_version")
    upsert_heartbeat(session, beat)
    return {"ok": True}
