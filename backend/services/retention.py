"""Artifact retention: old versions that can no longer serve give their weights back to the disk.

A trainer publishes a candidate every few rounds, so without a policy the artifact directory grows
for as long as learning runs. Beyond the newest ``keep`` versions, the weights of rejected,
rolled-back and retired versions are deleted; the live version, the one a rollback restores
(``@previous``) and any candidate awaiting a decision keep theirs whatever their age. A pruned
version's row, metrics, lineage and audit trail stay; only rolling back to it is no longer possible.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from backend.crud import audit, drafts
from backend.services.artifacts import ArtifactStore

ACTOR = "system:retention"
PRUNABLE = (drafts.REJECTED, drafts.ROLLED_BACK, drafts.RETIRED)


def prune_artifacts(session: Session, store: ArtifactStore, keep: int) -> list[str]:
    """Delete the weights the policy lets go; returns the versions pruned (each audited)."""
    protected = {version for version in drafts.aliases(session).values() if version}
    pruned = []
    for row in drafts.listing(session)[keep:]:
        if row.id in protected or row.status not in PRUNABLE or not row.artifact_uploaded:
            continue
        store.delete(row.id)
        row.artifact_uploaded = False
        reason = f"only the newest {keep} versions, the live and the previous keep their weights"
        audit.record(session, ACTOR, "draft.artifact_pruned", row.id, reason, commit=False)
        pruned.append(row.id)
    session.commit()
    return pruned
