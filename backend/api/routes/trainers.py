"""Operator view of the training workers: each one's latest round report."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from fastapi import APIRouter

from backend.api.deps import AdminDep, TrainersDep
from backend.schemas.operator import TrainerView

router = APIRouter(prefix="/api/trainers", tags=["operator"])


@router.get("", response_model=list[TrainerView])
def get_trainers(trainers: TrainersDep, _actor: AdminDep) -> list[TrainerView]:
    now = time.time()
    return [
        TrainerView(
            progress=reported.progress,
            reported_at=datetime.fromtimestamp(reported.received_at, UTC),
            age_seconds=round(now - reported.received_at, 3),
        )
        for reported in trainers.latest()
    ]
