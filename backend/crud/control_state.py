"""Named pieces of operator state stored as small JSON documents."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from backend.db.models import ControlState

DESIRED_DRAFT = "desired_draft"
LEARNING = "learning"
APPROVAL_POLICY = "approval_policy"


def get(session: Session, key: str, default: dict[str, Any]) -> dict[str, Any]:
    row = session.get(ControlState, key)
    return dict(row.value) if row is not None else dict(default)


def put(session: Session, key: str, value: dict[str, Any], commit: bool = True) -> None:
    row = session.get(ControlState, key)
    if row is None:
        session.add(ControlState(key=key, value=value))
    else:
        row.value = value
    if commit:
        session.commit()
