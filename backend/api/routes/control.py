"""Operator API for learning state, approval policy and the audit log."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query

from backend.api.deps import AdminDep, SessionDep, SettingsDep, TraceBusDep
from backend.crud import audit, control_state, drift
from backend.schemas.operator import (
    AuditView,
    DriftView,
    DriftWindowView,
    LearningState,
    Policy,
    Reason,
    TraceBusView,
)
from backend.services.learning import read_learning, set_paused
from backend.services.registry import get_policy

router = APIRouter(prefix="/api", tags=["operator"])


@router.get("/learning", response_model=LearningState)
def learning_status(session: SessionDep, _actor: AdminDep) -> LearningState:
    return read_learning(session)


@router.post("/learning/pause", response_model=LearningState)
def pause_learning(body: Reason, session: SessionDep, actor: AdminDep) -> LearningState:
    """Stop training rounds; traces keep flowing into the bounded stream."""
    return set_paused(session, True, actor, body.reason)


@router.post("/learning/resume", response_model=LearningState)
def resume_learning(body: Reason, session: SessionDep, actor: AdminDep) -> LearningState:
    return set_paused(session, False, actor, body.reason)


@router.get("/policy", response_model=Policy)
def read_policy(session: SessionDep, _actor: AdminDep) -> Policy:
    return Policy(**get_policy(session))


@router.put("/policy", response_model=Policy)
def write_policy(body: Policy, session: SessionDep, actor: AdminDep) -> Policy:
    """``auto``: candidates beating live by ``margin`` in shadow evaluation are promoted; ``manual``: wait."""
    value: dict[str, object] = {"mode": body.mode, "margin": body.margin}
    control_state.put(session, control_state.APPROVAL_POLICY, value, commit=False)
    audit.record(session, actor, "policy.set", body.mode, body.reason, details=value)
    return Policy(mode=body.mode, margin=body.margin)


@router.get("/audit", response_model=list[AuditView])
def audit_log(
    session: SessionDep,
    _actor: AdminDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    action: Annotated[str | None, Query(max_length=64)] = None,
) -> list[AuditView]:
    return [AuditView.of(row) for row in audit.entries(session, limit, offset, action)]


@router.get("/tracebus", response_model=TraceBusView)
def trace_bus(monitor: TraceBusDep, _actor: AdminDep) -> TraceBusView:
    """Depth of the trace stream and dead letters (null when Redis is unreachable), worker drops."""
    snapshot = monitor.snapshot()
    return TraceBusView(**asdict(snapshot))


@router.get("/drift", response_model=DriftView)
def drift_windows(
    session: SessionDep,
    settings: SettingsDep,
    _actor: AdminDep,
    limit: Annotated[int, Query(ge=1, le=2000)] = 200,
) -> DriftView:
    """Recent drift windows (oldest first) with the thresholds the trainer judged them by."""
    rows = drift.recent(session, limit)
    latest = rows[-1] if rows else None
    return DriftView(
        js_threshold=latest.js_threshold if latest else settings.drift_js_threshold,
        mix_threshold=latest.mix_threshold if latest else settings.drift_mix_threshold,
        windows=[DriftWindowView.model_validate(row, from_attributes=True) for row in rows],
    )
