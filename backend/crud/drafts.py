"""Draft version rows: creation with sequential ids, lookups, lineage."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.db.models import DraftVersion
from borealis.wire import DraftRegistration

CANDIDATE = "candidate"
PENDING_APPROVAL = "pending_approval"
LIVE = "live"
RETIRED = "retired"
REJECTED = "rejected"
ROLLED_BACK = "rolled_back"
UPLOADING = "uploading"
STATUSES = (UPLOADING, CANDIDATE, PENDING_APPROVAL, LIVE, RETIRED, REJECTED, ROLLED_BACK)


def create(session: Session, registration: DraftRegistration, attempts: int = 5) -> DraftVersion:
    """A new row with the next sequence number; two registrations racing for one number both land
    (the unique ``seq`` refuses the second, which takes the next number)."""
    for _ in range(attempts - 1):
        try:
            return _insert(session, registration)
        except IntegrityError:
            session.rollback()
    return _insert(session, registration)


def _insert(session: Session, registration: DraftRegistration) -> DraftVersion:
    seq = int(session.scalar(select(func.coalesce(func.max(DraftVersion.seq), 0))) or 0) + 1
    version = DraftVersion(
        id=f"v{seq:04d}",
        seq=seq,
        status=UPLOADING,
        parent_id=registration.parent_version,
        source=registration.source,
        artifact_sha256=registration.artifact_sha256,
        artifact_bytes=registration.artifact_bytes,
        artifact_uploaded=False,
        manifest=registration.manifest,
        data_window=registration.data_window,
        training_metrics=registration.training_metrics,
        shadow_eval=registration.shadow_eval,
        live_eval={},
    )
    session.add(version)
    session.commit()
    return version


def get(session: Session, version_id: str) -> DraftVersion | None:
    return session.get(DraftVersion, version_id)


def listing(session: Session, status: str | None = None) -> list[DraftVersion]:
    query = select(DraftVersion).order_by(DraftVersion.seq.desc())
    if status:
        query = query.where(DraftVersion.status == status)
    return list(session.scalars(query))


def same_artifact(session: Session, sha256: str) -> DraftVersion | None:
    """A version already registered with these exact weights, unless it was rejected."""
    query = select(DraftVersion).where(
        DraftVersion.artifact_sha256 == sha256, DraftVersion.status != REJECTED
    )
    return session.scalars(query.order_by(DraftVersion.seq.desc())).first()


def uploading_since(session: Session, before: datetime) -> list[DraftVersion]:
    """Versions still waiting for their weights, registered before ``before``."""
    query = select(DraftVersion).where(DraftVersion.status == UPLOADING, DraftVersion.created_at < before)
    return list(session.scalars(query))


def live(session: Session) -> DraftVersion | None:
    return session.scalars(select(DraftVersion).where(DraftVersion.status == LIVE)).first()


def lineage(session: Session, version: DraftVersion, limit: int = 64) -> list[str]:
    """Ancestors from the parent up to the first draft (bounded against cycles)."""
    chain: list[str] = []
    parent = version.parent_id
    while parent is not None and len(chain) < limit:
        chain.append(parent)
        row = session.get(DraftVersion, parent)
        parent = row.parent_id if row is not None else None
    return chain


def aliases(session: Session) -> dict[str, str | None]:
    """MLflow-style aliases over the statuses: ``champion`` is live; ``challenger`` the newest
    candidate awaiting a decision; ``previous`` the most recently promoted version that is no
    longer live — the one a rollback restores."""
    challenger = session.scalars(
        select(DraftVersion)
        .where(DraftVersion.status.in_((CANDIDATE, PENDING_APPROVAL)))
        .order_by(DraftVersion.seq.desc())
    ).first()
    previous = session.scalars(
        select(DraftVersion)
        .where(DraftVersion.status.in_((RETIRED, ROLLED_BACK)), DraftVersion.promoted_at.is_not(None))
        .order_by(DraftVersion.promoted_at.desc(), DraftVersion.seq.desc())
    ).first()
    champion = live(session)
    return {
        "champion": champion.id if champion else None,
        "challenger": challenger.id if challenger else None,
        "previous": previous.id if previous else None,
    }
