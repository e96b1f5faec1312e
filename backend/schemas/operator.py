"""Operator API bodies and views."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

from backend.crud.workers import as_utc
from backend.db.models import AuditEntry, DraftVersion
from backend.services.registry import shadow_score
from borealis.wire import TrainerProgress

VersionId = Annotated[str, Path(pattern=r"^v[0-9]{4,9}$", description="A draft version id, e.g. v0007.")]


class Reason(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="", max_length=1000, description="Why; recorded in the audit log.")


TagKey = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
MAX_TAGS = 32


class Annotation(BaseModel):
    """Operator tags (MLflow's version tags) and note on a version; audited like every decision."""

    model_config = ConfigDict(extra="forbid")
    set_tags: dict[TagKey, Annotated[str, Field(max_length=256)]] = Field(
        default_factory=dict, max_length=MAX_TAGS, description="Tags to add or overwrite."
    )
    delete_tags: list[TagKey] = Field(default_factory=list, max_length=MAX_TAGS)
    note: str | None = Field(default=None, max_length=4096, description="Replaces the note; null keeps it.")
    reason: str = Field(default="", max_length=1000, description="Why; recorded in the audit log.")


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Literal["auto", "manual"]
    margin: float = Field(
        default=0.05,
        ge=0.0,
        le=10.0,
        description="auto: promote when the paired 95% interval of the per-trace shadow acceptance "
        "difference lies above this fraction of live's (without paired statistics: when the pooled "
        "score beats live's by this fraction).",
    )
    reason: str = Field(default="", max_length=1000)


class LearningState(BaseModel):
    paused: bool
    updated_by: str | None = None
    reason: str = ""


class DraftView(BaseModel):
    id: str
    status: str
    parent_id: str | None
    source: str
    created_at: datetime
    promoted_at: datetime | None
    artifact_sha256: str
    artifact_bytes: int
    artifact_uploaded: bool
    shadow_eval: dict[str, Any]
    shadow_candidate: float | None = Field(
        description="The candidate's simulated acceptance overall, as the approval policy scores it."
    )
    shadow_live: float | None = Field(description="The live draft's, on the same held-out traces.")
    live_eval: dict[str, Any]
    training_metrics: dict[str, Any]
    data_window: dict[str, Any]
    request_to_live_seconds: float | None = Field(
        description="From the newest trace this draft trained on finishing to the draft going live: "
        "how far serving lags behind the traffic it learns from. Null until it is promoted."
    )
    tags: dict[str, str]
    note: str

    @classmethod
    def of(cls, row: DraftVersion) -> DraftView:
        return cls(
            id=row.id,
            status=row.status,
            parent_id=row.parent_id,
            source=row.source,
            created_at=as_utc(row.created_at),
            promoted_at=as_utc(row.promoted_at) if row.promoted_at else None,
            artifact_sha256=row.artifact_sha256,
            artifact_bytes=row.artifact_bytes,
            artifact_uploaded=row.artifact_uploaded,
            shadow_eval=row.shadow_eval,
            shadow_candidate=shadow_score(row.shadow_eval, "candidate"),
            shadow_live=shadow_score(row.shadow_eval, "live"),
            live_eval=row.live_eval,
            training_metrics=row.training_metrics,
            data_window=row.data_window,
            request_to_live_seconds=_request_to_live(row),
            tags=row.tags or {},
            note=row.note or "",
        )


def _request_to_live(row: DraftVersion) -> float | None:
    newest = row.data_window.get("to") if row.data_window else None
    if row.promoted_at is None or not isinstance(newest, int | float):
        return None
    return round(as_utc(row.promoted_at).timestamp() - float(newest), 3)


class DraftAliases(BaseModel):
    champion: str | None = Field(description="The live version.")
    challenger: str | None = Field(description="The newest candidate or version pending approval.")
    previous: str | None = Field(description="The most recently promoted version no longer live.")


class DraftDetail(DraftView):
    lineage: list[str]
    manifest: dict[str, Any]


class AuditView(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    reason: str
    details: dict[str, Any]

    @classmethod
    def of(cls, row: AuditEntry) -> AuditView:
        return cls(
            id=row.id,
            at=as_utc(row.at),
            actor=row.actor,
            action=row.action,
            target=row.target,
            reason=row.reason,
            details=row.details,
        )


class TraceBusView(BaseModel):
    stream_length: int | None
    dead_letter_length: int | None
    exported: int
    dropped: int


class DriftWindowView(BaseModel):
    trainer: str
    index: int
    requests: int
    tokens: int
    started_at: float
    ended_at: float
    domain_mix: dict[str, float]
    acceptance_by_domain: dict[str, float]
    divergence: float | None
    divergence_floor: float | None = Field(
        description="The reference windows' divergence from each other; a shift exceeds it by js_threshold."
    )
    mix_shift: float | None
    shift: bool


class DriftView(BaseModel):
    js_threshold: float
    mix_threshold: float
    windows: list[DriftWindowView]


class TrainerView(BaseModel):
    progress: TrainerProgress = Field(description="The trainer's latest report (see borealis.wire).")
    reported_at: datetime
    age_seconds: float = Field(description="Seconds since that report: a trainer reports every round.")


class WorkerView(BaseModel):
    id: str
    url: str
    model: str
    draft_version: str | None
    active_requests: int
    healthy: bool
    last_heartbeat_at: datetime
    engine: str = Field(
        description="spec: speculative decoding with drafts; hf: reference decoding, no draft."
    )
    fallback_reason: str = Field(description="Why this worker fell back to hf; empty when it did not.")
