"""``/metrics`` in the Prometheus text format."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from backend.api.deps import MetricsDep

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response)
def metrics(serving: MetricsDep) -> Response:
    return Response(generate_latest(serving.registry), media_type=CONTENT_TYPE_LATEST)
