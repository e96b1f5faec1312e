"""Learning on/off: the operator's switch that training workers obey between rounds."""

from __future__ import annotations

from sqlalchemy.orm import Session

from backend.crud import audit, control_state
from backend.schemas.operator import LearningState


def read_learning(session: Session) -> LearningState:
    return LearningState(**control_state.get(session, control_state.LEARNING, {"paused": False}))


def set_paused(session: Session, paused: bool, actor: str, reason: str) -> LearningState:
    state = LearningState(paused=paused, updated_by=actor, reason=reason)
    control_state.put(session, control_state.LEARNING, state.model_dump(), commit=False)
    audit.record(session, actor, "learning.pause" if paused else "learning.resume", "", reason)
    return state
