"""Operator API for draft versions: list, detail, approve, reject, promote, roll back."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from backend.api.deps import AdminDep, SessionDep
from backend.api.errors import APIError
from backend.crud import drafts
from backend.schemas.operator import DraftDetail, DraftView, Reason, VersionId
from backend.services.registry import Registry, TransitionError

router = APIRouter(prefix="/api/drafts", tags=["operator"])


def _registry(request: Request, session: SessionDep) -> Registry:
    return Registry(session, request.app.state.swap_publisher)


@router.get("", response_model=list[DraftView])
def list_drafts(
    session: SessionDep,
    _actor: AdminDep,
    status: Annotated[str | None, Query(max_length=32, pattern="^[a-z_]+$")] = None,
) -> list[DraftView]:
    if status is not None and status not in drafts.STATUSES:
        raise APIError(400, f"unknown status {status!r}; one of {list(drafts.STATUSES)}", param="status")
    return [DraftView.of(row) for row in drafts.listing(session, status)]


@router.get("/{version_id}", response_model=DraftDetail)
def get_draft(version_id: VersionId, session: SessionDep, _actor: AdminDep) -> DraftDetail:
    row = drafts.get(session, version_id)
    if row is None:
        raise APIError(404, f"draft version {version_id!r} does not exist", type_="not_found_error")
    view = DraftView.of(row)
    return DraftDetail(**view.model_dump(), lineage=drafts.lineage(session, row), manifest=row.manifest)


def _transition(
    request: Request, session: SessionDep, method: str, version_id: str, actor: str, reason: str
) -> DraftView:
    try:
        row = getattr(_registry(request, session), method)(version_id, actor, reason)
    except TransitionError as exc:
        raise APIError(
            exc.status, str(exc), type_="conflict_error" if exc.status == 409 else "invalid_request_error"
        ) from exc
    return DraftView.of(row)


@router.post("/{version_id}/approve", response_model=DraftView)
def approve(
    version_id: VersionId, body: Reason, request: Request, session: SessionDep, actor: AdminDep
) -> DraftView:
    """Approve a version pending approval: it is promoted and every worker swaps to it."""
    return _transition(request, session, "approve", version_id, actor, body.reason)


@router.post("/{version_id}/reject", response_model=DraftView)
def reject(
    version_id: VersionId, body: Reason, request: Request, session: SessionDep, actor: AdminDep
) -> DraftView:
    return _transition(request, session, "reject", version_id, actor, body.reason)


@router.post("/{version_id}/promote", response_model=DraftView)
def promote(
    version_id: VersionId, body: Reason, request: Request, session: SessionDep, actor: AdminDep
) -> DraftView:
    """Promote a candidate regardless of policy (an operator override, audited)."""
    return _transition(request, session, "promote", version_id, actor, body.reason)


@router.post("/{version_id}/rollback", response_model=DraftView)
def rollback(
    version_id: VersionId, body: Reason, request: Request, session: SessionDep, actor: AdminDep
) -> DraftView:
    """Make an earlier, previously live version live again; the current one becomes rolled_back."""
    return _transition(request, session, "rollback", version_id, actor, body.reason)
