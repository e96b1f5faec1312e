"""Operator API for draft versions: list, detail, approve, reject, promote, roll back, annotate."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from backend.api.deps import AdminDep, RegistryDep, SessionDep
from backend.api.errors import APIError
from backend.crud import drafts
from backend.schemas.operator import (
    MAX_TAGS,
    Annotation,
    DraftAliases,
    DraftDetail,
    DraftView,
    Reason,
    VersionId,
)

router = APIRouter(prefix="/api/drafts", tags=["operator"])


@router.get("", response_model=list[DraftView])
def list_drafts(
    session: SessionDep,
    _actor: AdminDep,
    status: Annotated[str | None, Query(max_length=32, pattern="^[a-z_]+$")] = None,
) -> list[DraftView]:
    if status is not None and status not in drafts.STATUSES:
        raise APIError(400, f"unknown status {status!r}; one of {list(drafts.STATUSES)}", param="status")
    return [DraftView.of(row) for row in drafts.listing(session, status)]


@router.get("/aliases", response_model=DraftAliases)
def get_aliases(session: SessionDep, _actor: AdminDep) -> DraftAliases:
    """``champion`` (live), ``challenger`` (newest candidate awaiting a decision), ``previous``
    (what a rollback restores), as MLflow's registry aliases name them."""
    return DraftAliases(**drafts.aliases(session))


@router.get("/{version_id}", response_model=DraftDetail)
def get_draft(version_id: VersionId, session: SessionDep, _actor: AdminDep) -> DraftDetail:
    row = drafts.get(session, version_id)
    if row is None:
        raise APIError(404, f"draft version {version_id!r} does not exist", type_="not_found_error")
    view = DraftView.of(row)
    return DraftDetail(**view.model_dump(), lineage=drafts.lineage(session, row), manifest=row.manifest)


@router.post("/{version_id}/approve", response_model=DraftView)
def approve(version_id: VersionId, body: Reason, registry: RegistryDep, actor: AdminDep) -> DraftView:
    """Approve a version pending approval: it is promoted and every worker swaps to it."""
    return DraftView.of(registry.approve(version_id, actor, body.reason))


@router.post("/{version_id}/reject", response_model=DraftView)
def reject(version_id: VersionId, body: Reason, registry: RegistryDep, actor: AdminDep) -> DraftView:
    return DraftView.of(registry.reject(version_id, actor, body.reason))


@router.post("/{version_id}/promote", response_model=DraftView)
def promote(version_id: VersionId, body: Reason, registry: RegistryDep, actor: AdminDep) -> DraftView:
    """Promote a candidate regardless of policy (an operator override, audited)."""
    return DraftView.of(registry.promote(version_id, actor, body.reason))


@router.post("/{version_id}/rollback", response_model=DraftView)
def rollback(version_id: VersionId, body: Reason, registry: RegistryDep, actor: AdminDep) -> DraftView:
    """Make an earlier, previously live version live again; the current one becomes rolled_back."""
    return DraftView.of(registry.rollback(version_id, actor, body.reason))


@router.patch("/{version_id}", response_model=DraftView)
def annotate(version_id: VersionId, body: Annotation, registry: RegistryDep, actor: AdminDep) -> DraftView:
    """Set or delete tags and replace the note of a version (MLflow's version tags and description)."""
    return DraftView.of(
        registry.annotate(
            version_id, actor, body.set_tags, body.delete_tags, body.note, body.reason, MAX_TAGS
        )
    )
