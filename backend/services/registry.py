"""Draft lifecycle: registration, approval policy, promotion, rejection, rollback.

Every transition is one database transaction together with its audit entry; the swap command is
published after the commit, and the stored desired version makes workers converge regardless.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from backend.crud import audit, control_state, drafts
from backend.db.models import DraftVersion, utcnow
from backend.services.swaps import SwapPublisher
from borealis.wire import DraftRegistration

DEFAULT_POLICY: dict[str, Any] = {"mode": "auto", "margin": 0.05}
ROLLBACK_TARGETS = (drafts.RETIRED, drafts.ROLLED_BACK)
ABANDONED_UPLOAD_AFTER = timedelta(hours=1)


class TransitionError(ValueError):
    """The requested transition is not allowed from the version's current status."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


def shadow_score(shadow_eval: dict[str, dict[str, float]], arm: str) -> float | None:
    """The ``all`` entry when the trainer reports one; else the mean over domains, weighted by traces."""
    overall = shadow_eval.get("all")
    if overall is not None and arm in overall:
        return float(overall[arm])
    total = weight = 0.0
    for result in shadow_eval.values():
        if arm not in result:
            continue
        w = float(result.get("traces", 1.0))
        total += w * float(result[arm])
        weight += w
    return total / weight if weight else None


def beats_live(shadow_eval: dict[str, dict[str, float]], margin: float) -> tuple[bool, str]:
    """The auto policy's verdict on a candidate, and why.

    With the trainer's paired interval (``diff_low``/``diff_high`` of the per-trace difference on the
    same held-out traces), the candidate must be better beyond doubt: the interval's lower end above
    ``margin`` x live. Without one (an upload scored elsewhere), its pooled score must beat live's by
    the margin.
    """
    candidate, baseline = shadow_score(shadow_eval, "candidate"), shadow_score(shadow_eval, "live")
    overall = shadow_eval.get("all", {})
    if candidate is None or baseline is None:
        return False, "no shadow evaluation to judge by"
    if "diff_low" in overall and "diff_high" in overall:
        low, high = float(overall["diff_low"]), float(overall["diff_high"])
        interval = f"paired 95% interval of candidate - live per trace [{low:+.3f}, {high:+.3f}]"
        if low > margin * baseline:
            return True, f"{interval} lies above {margin} x live {baseline:.3f}"
        return False, f"{interval} does not lie above {margin} x live {baseline:.3f}"
    if candidate >= baseline * (1 + margin):
        return True, f"shadow acceptance {candidate:.3f} >= live {baseline:.3f} x (1 + {margin})"
    return False, f"shadow acceptance {candidate:.3f} does not beat live {baseline:.3f} by {margin}"


def desired_version(session: Session) -> str | None:
    value = control_state.get(session, control_state.DESIRED_DRAFT, {"version": None})
    version = value.get("version")
    return str(version) if version else None


def get_policy(session: Session) -> dict[str, Any]:
    return control_state.get(session, control_state.APPROVAL_POLICY, DEFAULT_POLICY)


class Registry:
    def __init__(self, session: Session, publisher: SwapPublisher) -> None:
        self.session = session
        self.publisher = publisher

    def _require(self, version_id: str) -> DraftVersion:
        version = drafts.get(self.session, version_id)
        if version is None:
            raise TransitionError(f"draft version {version_id!r} does not exist", status=404)
        return version

    def register(self, registration: DraftRegistration, actor: str) -> DraftVersion:
        """A new version, or the existing one with the same artifact (a publisher retrying after a
        timeout must not mint a second version of the same weights); uploads abandoned for longer
        than ``ABANDONED_UPLOAD_AFTER`` are closed on the way."""
        if registration.parent_version and drafts.get(self.session, registration.parent_version) is None:
            raise TransitionError(
                f"parent version {registration.parent_version!r} does not exist", status=400
            )
        self._close_abandoned_uploads(actor)
        existing = drafts.same_artifact(self.session, registration.artifact_sha256)
        if existing is not None:
            return existing
        version = drafts.create(self.session, registration)
        audit.record(
            self.session,
            actor,
            "draft.register",
            version.id,
            details={
                "parent": version.parent_id,
                "sha256": version.artifact_sha256,
                "bytes": version.artifact_bytes,
            },
        )
        return version

    def _close_abandoned_uploads(self, actor: str) -> None:
        for row in drafts.uploading_since(self.session, utcnow() - ABANDONED_UPLOAD_AFTER):
            row.status = drafts.REJECTED
            audit.record(self.session, actor, "draft.upload_abandoned", row.id, "its weights never arrived")

    def artifact_received(self, version_id: str, actor: str) -> DraftVersion:
        """The weights are verified and stored: the version becomes a candidate and policy applies."""
        version = self._require(version_id)
        if version.status != drafts.UPLOADING:
            raise TransitionError(f"{version_id} already has its artifact")
        version.artifact_uploaded = True
        version.status = drafts.CANDIDATE
        audit.record(self.session, actor, "draft.artifact", version.id, commit=False)
        self.session.commit()
        return self._apply_policy(version)

    def _apply_policy(self, version: DraftVersion) -> DraftVersion:
        policy = get_policy(self.session)
        actor = f"policy:{policy['mode']}"
        if policy["mode"] == "manual":
            version.status = drafts.PENDING_APPROVAL
            audit.record(
                self.session, actor, "draft.pending_approval", version.id, reason="manual approval policy"
            )
            return version
        if drafts.live(self.session) is None:
            return self.promote(version.id, actor, "first draft: nothing live to compare with")
        better, reason = beats_live(version.shadow_eval, float(policy["margin"]))
        if better:
            return self.promote(version.id, actor, reason)
        audit.record(self.session, actor, "draft.held", version.id, reason=reason)
        return version

    def approve(self, version_id: str, actor: str, reason: str) -> DraftVersion:
        version = self._require(version_id)
        if version.status != drafts.PENDING_APPROVAL:
            raise TransitionError(f"{version_id} is {version.status}, not pending approval")
        audit.record(self.session, actor, "draft.approve", version_id, reason, commit=False)
        return self.promote(version_id, actor, reason)

    def reject(self, version_id: str, actor: str, reason: str) -> DraftVersion:
        version = self._require(version_id)
        if version.status not in (drafts.CANDIDATE, drafts.PENDING_APPROVAL):
            raise TransitionError(f"{version_id} is {version.status}; only candidates can be rejected")
        version.status = drafts.REJECTED
        audit.record(self.session, actor, "draft.reject", version_id, reason)
        return version

    def promote(self, version_id: str, actor: str, reason: str) -> DraftVersion:
        version = self._require(version_id)
        if version.status not in (drafts.CANDIDATE, drafts.PENDING_APPROVAL):
            raise TransitionError(f"{version_id} is {version.status}; only candidates can be promoted")
        return self._make_live(version, actor, "draft.promote", reason, previous_status=drafts.RETIRED)

    def rollback(
        self, version_id: str, actor: str, reason: str, action: str = "draft.rollback"
    ) -> DraftVersion:
        version = self._require(version_id)
        if version.status not in ROLLBACK_TARGETS or version.promoted_at is None:
            raise TransitionError(
                f"{version_id} is {version.status}; roll back only to a previously live version"
            )
        return self._make_live(version, actor, action, reason, previous_status=drafts.ROLLED_BACK)

    def annotate(
        self,
        version_id: str,
        actor: str,
        set_tags: dict[str, str],
        delete_tags: list[str],
        note: str | None,
        reason: str,
        max_tags: int,
    ) -> DraftVersion:
        """Operator tags and note on any version, whatever its status; the change is audited."""
        version = self._require(version_id)
        tags = {k: v for k, v in (version.tags or {}).items() if k not in delete_tags}
        tags.update(set_tags)
        if len(tags) > max_tags:
            raise TransitionError(f"{version_id} would carry {len(tags)} tags; at most {max_tags}", 400)
        version.tags = tags
        details: dict[str, Any] = {"set_tags": set_tags, "delete_tags": delete_tags}
        if note is not None:
            version.note = note
            details["note"] = note
        audit.record(self.session, actor, "draft.annotate", version_id, reason, details=details)
        return version

    def _make_live(
        self, version: DraftVersion, actor: str, action: str, reason: str, previous_status: str
    ) -> DraftVersion:
        if not version.artifact_uploaded:
            raise TransitionError(f"{version.id} has no verified artifact")
        previous = drafts.live(self.session)
        if previous is not None:
            previous.status = previous_status
            self.session.flush()  # the old live row leaves the one-live index before the new one enters
        version.status = drafts.LIVE
        version.promoted_at = utcnow()
        control_state.put(
            self.session,
            control_state.DESIRED_DRAFT,
            {"version": version.id, "previous": previous.id if previous else None},
            commit=False,
        )
        audit.record(
            self.session,
            actor,
            action,
            version.id,
            reason,
            commit=False,
            details={"previous": previous.id if previous else None},
        )
        self.session.commit()
        self.publisher.publish(version.id, reason)
        return version
