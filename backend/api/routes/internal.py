"""Endpoints that inference and training workers call, behind the cluster token (see borealis.wire)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from backend.api.deps import (
    ArtifactsDep,
    ClusterDep,
    MetricsDep,
    PublisherDep,
    RegistryDep,
    SessionDep,
    SessionFactoryDep,
    SettingsDep,
    StateMetricsDep,
    TraceBusDep,
    TrainersDep,
)
from backend.api.errors import APIError
from backend.crud import audit, drafts, drift
from backend.crud.workers import upsert_heartbeat
from backend.schemas.operator import VersionId
from backend.services.artifacts import ArtifactRejected, ArtifactStore
from backend.services.learning import read_learning
from backend.services.registry import Registry, desired_version
from backend.services.retention import prune_artifacts
from backend.services.swaps import SwapPublisher
from backend.services.trace_bus_metrics import WorkerTraceCounts
from borealis.wire import (
    DraftManifest,
    DraftRegistration,
    DriftReport,
    HeartbeatReply,
    LearningState,
    Received,
    RegisteredDraft,
    SwapAck,
    TrainerProgress,
    UploadResult,
    WorkerRegistration,
)

router = APIRouter(prefix="/internal", tags=["internal"], dependencies=[ClusterDep])

WORKER = "worker"
TRAINER = "trainer"


@router.post("/workers/heartbeat", response_model=HeartbeatReply)
def worker_heartbeat(
    beat: WorkerRegistration, session: SessionDep, trace_bus: TraceBusDep, state: StateMetricsDep
) -> HeartbeatReply:
    upsert_heartbeat(session, beat)
    trace_bus.report(
        beat.worker_id,
        WorkerTraceCounts(
            beat.traces_exported, beat.traces_dropped, beat.trace_features_stored, beat.trace_features_dropped
        ),
    )
    state.report_worker(beat)
    return HeartbeatReply(
        desired_draft_version=desired_version(session), learning_paused=read_learning(session).paused
    )


@router.post("/workers/swap-ack", response_model=Received)
def swap_ack(ack: SwapAck, session: SessionDep, metrics: MetricsDep) -> Received:
    metrics.observe_swap(ack.ok, ack.load_seconds)
    action = "swap.ack" if ack.ok else "swap.failed"
    audit.record(
        session,
        f"{WORKER}:{ack.worker_id}",
        action,
        ack.draft_version or "none",
        ack.error,
        details={"load_seconds": ack.load_seconds},
    )
    return Received()


@router.get("/learning", response_model=LearningState)
def learning(session: SessionDep) -> LearningState:
    live = drafts.live(session)
    return LearningState(paused=read_learning(session).paused, live_version=live.id if live else None)


@router.post("/drafts", response_model=RegisteredDraft)
def register_draft(body: DraftRegistration, registry: RegistryDep) -> RegisteredDraft:
    """Step one of publishing a candidate; step two uploads the weights to ``upload_path``."""
    row = registry.register(body, TRAINER)
    return RegisteredDraft(
        version=row.id,
        upload_path=f"/internal/drafts/{row.id}/artifact",
        status=row.status,
        artifact_uploaded=row.artifact_uploaded,
    )


def _expected_upload(sessions: sessionmaker[Session], version_id: str) -> tuple[str, int]:
    with sessions() as session:
        row = drafts.get(session, version_id)
        if row is None:
            raise APIError(404, f"draft version {version_id!r} does not exist", type_="not_found_error")
        if row.status != drafts.UPLOADING:
            raise APIError(409, f"{version_id} already has its artifact", type_="conflict_error")
        return row.artifact_sha256, row.artifact_bytes


def _refuse_upload(sessions: sessionmaker[Session], version_id: str, reason: str) -> None:
    with sessions() as session:
        audit.record(session, TRAINER, "draft.artifact_refused", version_id, reason)


def _accept_upload(
    sessions: sessionmaker[Session],
    publisher: SwapPublisher,
    version_id: str,
    store: ArtifactStore,
    keep: int,
) -> UploadResult:
    with sessions() as session:
        row = Registry(session, publisher).artifact_received(version_id, TRAINER)
        result = UploadResult(version=row.id, status=row.status)
        prune_artifacts(session, store, keep)  # one more version: the oldest may let its weights go
        return result


@router.put("/drafts/{version_id}/artifact", response_model=UploadResult)
async def upload_artifact(
    version_id: VersionId,
    request: Request,
    sessions: SessionFactoryDep,
    store: ArtifactsDep,
    publisher: PublisherDep,
    settings: SettingsDep,
) -> UploadResult:
    """Raw safetensors body; refused unless size, sha256 and format match the registration.

    Async to stream the body; the database and swap-publishing work around it runs in the thread
    pool, so a slow database or Redis never stalls the event loop that relays inference streams.
    """
    expected_sha, expected_bytes = await run_in_threadpool(_expected_upload, sessions, version_id)
    try:
        await store.receive(version_id, request.stream(), expected_sha, expected_bytes)
    except ArtifactRejected as exc:
        await run_in_threadpool(_refuse_upload, sessions, version_id, str(exc))
        raise APIError(400, f"artifact refused: {exc}") from exc
    keep = settings.artifact_keep_versions
    return await run_in_threadpool(_accept_upload, sessions, publisher, version_id, store, keep)


@router.get("/drafts/{version_id}/manifest", response_model=DraftManifest)
def draft_manifest(version_id: VersionId, session: SessionDep) -> DraftManifest:
    row = drafts.get(session, version_id)
    if row is None or not row.artifact_uploaded:
        raise APIError(404, f"no verified artifact for {version_id!r}", type_="not_found_error")
    return DraftManifest(
        version=row.id,
        parent_version=row.parent_id,
        sha256=row.artifact_sha256,
        artifact_bytes=row.artifact_bytes,
        manifest=row.manifest,
    )


@router.get("/drafts/{version_id}/artifact")
def download_artifact(version_id: VersionId, session: SessionDep, store: ArtifactsDep) -> FileResponse:
    row = drafts.get(session, version_id)
    path = store.weights_path(version_id)
    if row is None or not row.artifact_uploaded or not path.is_file():
        raise APIError(404, f"no verified artifact for {version_id!r}", type_="not_found_error")
    return FileResponse(
        path, media_type="application/octet-stream", headers={"x-borealis-sha256": row.artifact_sha256}
    )


@router.post("/drift", response_model=Received)
def report_drift(report: DriftReport, session: SessionDep) -> Received:
    """A trainer's closed drift window; a detected shift is also written to the audit log."""
    drift.add(session, report)
    if report.shift:
        audit.record(
            session,
            f"{TRAINER}:{report.trainer}",
            "drift.shift",
            f"window {report.index}",
            f"divergence {report.divergence}, mix shift {report.mix_shift}",
            details={"domain_mix": report.domain_mix},
        )
    return Received()


@router.post("/trainers/progress", response_model=Received)
def trainer_progress(progress: TrainerProgress, trainers: TrainersDep) -> Received:
    """A trainer's counters after a round, for ``/api/trainers`` and ``/metrics``."""
    trainers.report(progress)
    return Received()
