"""Live acceptance per draft version, and automatic rollback when a new version does worse.

Each finished request adds its speculative counts to its draft version's window. When a window
fills, the version's ``live_eval`` is stored and, until ``judge_windows`` windows have passed, compared
with the previous version's on the domains both served: a drop beyond the margin in any of them
rolls back, recorded in the audit log. A window with no domain in common (say, traffic flooded with
fresh labels) is "not yet judged", never a pass, so it cannot wave a worse draft through.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from backend.crud import audit, control_state, drafts
from backend.services.registry import Registry, TransitionError
from backend.services.swaps import SwapPublisher
from borealis.settings import RollbackSettings

log = logging.getLogger(__name__)
ACTOR = "system:auto-rollback"


@dataclass
class _Tally:
    requests: int = 0
    steps: int = 0
    emitted: int = 0  # target steps + accepted draft tokens

    def add(self, steps: int, accepted: int) -> None:
        self.requests += 1
        self.steps += steps
        self.emitted += steps + accepted

    @property
    def acceptance_length(self) -> float:
        return self.emitted / self.steps if self.steps else 0.0


@dataclass
class _Window:
    total: _Tally = field(default_factory=_Tally)
    domains: dict[str, _Tally] = field(default_factory=lambda: defaultdict(_Tally))


def comparable_means(
    current: dict[str, Any], previous: dict[str, Any] | None
) -> tuple[float, float, list[str]] | None:
    """Both versions' acceptance on the domains both served, weighted by the new version's traffic.

    A domain shift at the time of a swap changes acceptance by itself (prose drafts differently
    from code): comparing whole windows would blame, or credit, the draft for the traffic.
    """
    if not previous:
        return None
    before = previous.get("domains") or {}
    after = current.get("domains") or {}
    shared = sorted(d for d in after if d in before)
    if not shared:
        return None
    weights = {d: float(after[d]["requests"]) for d in shared}
    total = sum(weights.values())
    mean = sum(weights[d] * float(after[d]["mean_acceptance_length"]) for d in shared) / total
    reference = sum(weights[d] * float(before[d]["mean_acceptance_length"]) for d in shared) / total
    return mean, reference, shared


class LiveMonitor:
    def __init__(
        self,
        sessions: Callable[[], Session],
        publisher: SwapPublisher,
        settings: RollbackSettings,
    ) -> None:
        self._sessions = sessions
        self._publisher = publisher
        self._settings = settings
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = defaultdict(_Window)
        self._passed: dict[str, int] = defaultdict(int)  # comparable windows a version has passed

    def record(self, version: str | None, domain: str | None, steps: int, accepted: int) -> None:
        """Count one finished request (blocking: touches the database when a window fills)."""
        if version is None or steps <= 0:
            return
        with self._lock:
            window = self._windows[version]
            window.total.add(steps, accepted)
            window.domains[domain or "unknown"].add(steps, accepted)
            if window.total.requests < self._settings.window:
                return
            del self._windows[version]
            judge = self._passed[version] < self._settings.judge_windows
        self._store_and_judge(version, window, judge=judge)

    def _store_and_judge(self, version: str, window: _Window, judge: bool) -> None:
        mean = window.total.acceptance_length
        live_eval = {
            "mean_acceptance_length": round(mean, 4),
            "requests": window.total.requests,
            "domains": {
                d: {"mean_acceptance_length": round(t.acceptance_length, 4), "requests": t.requests}
                for d, t in window.domains.items()
            },
        }
        with self._sessions() as session:
            row = drafts.get(session, version)
            if row is None:
                return
            row.live_eval = live_eval
            session.commit()
            if judge and row.status == drafts.LIVE:
                self._judge(session, version, live_eval)

    def _judge(self, session: Session, version: str, live_eval: dict[str, Any]) -> None:
        previous_id = control_state.get(session, control_state.DESIRED_DRAFT, {}).get("previous")
        previous = drafts.get(session, previous_id) if previous_id else None
        compared = comparable_means(live_eval, previous.live_eval) if previous is not None else None
        if previous is None or compared is None:
            audit.record(
                session,
                ACTOR,
                "draft.live_check",
                version,
                "not yet judged: no live reference on the same domains to compare with",
                details={"mean_acceptance_length": live_eval["mean_acceptance_length"], "judged": False},
            )
            return
        mean, reference, shared = compared
        floor = reference * (1 - self._settings.margin)
        details = {
            "mean_acceptance_length": mean,
            "previous": previous.id,
            "previous_mean": reference,
            "domains": shared,
        }
        if mean >= floor or not self._settings.enabled:
            with self._lock:
                self._passed[version] += 1
                passed = self._passed[version]
            audit.record(
                session,
                ACTOR,
                "draft.live_check",
                version,
                f"live acceptance {mean:.3f} vs previous {reference:.3f} on {', '.join(shared)}"
                f" (window {passed} of {self._settings.judge_windows} judged)",
                details={**details, "judged": True},
            )
            return
        reason = (
            f"live acceptance {mean:.3f} fell below {reference:.3f} x (1 - {self._settings.margin})"
            f" on {', '.join(shared)}"
        )
        try:
            Registry(session, self._publisher).rollback(
                previous.id, ACTOR, reason, action="draft.auto_rollback"
            )
        except TransitionError as exc:
            log.warning("auto-rollback of %s not possible: %s", version, exc)
            audit.record(
                session, ACTOR, "draft.live_check", version, f"rollback impossible: {exc}", details=details
            )
