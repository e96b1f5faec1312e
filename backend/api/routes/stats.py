"""Operator time series of serving for the dashboard figures (recent past, in time buckets)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query

from backend.api.deps import AdminDep, ServingStatsDep
from backend.schemas.stats import BucketView, CellView, ServingSeries

router = APIRouter(prefix="/api/stats", tags=["operator"])


@router.get("/serving", response_model=ServingSeries)
def serving(
    stats: ServingStatsDep,
    _actor: AdminDep,
    minutes: Annotated[float, Query(gt=0, le=60, description="How far back.")] = 15,
) -> ServingSeries:
    """Requests, errors, tokens, tokens/s and mean acceptance length per bucket, by version and domain.

    Kept in memory by this control-plane process since it started (the last hour at most)."""
    now = time.time()
    buckets = []
    for summary in stats.series(now - minutes * 60):
        total = CellView.of(summary.total, summary.seconds)
        buckets.append(
            BucketView(
                **total.model_dump(),
                start=summary.start,
                seconds=round(summary.seconds, 3),
                by_version={k: CellView.of(c, summary.seconds) for k, c in summary.by_version.items()},
                by_domain={k: CellView.of(c, summary.seconds) for k, c in summary.by_domain.items()},
            )
        )
    return ServingSeries(bucket_seconds=stats.bucket_seconds, now=now, buckets=buckets)
