"""The trainer's view of the control plane: learning on or off, the live draft, publishing candidates.

Any failure to reach the control plane reads as "paused": a trainer that cannot publish or learn the
live version should not spend CPU next to serving on work nobody can use.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

from borealis.control_client import ControlPlaneClient, ControlPlaneError
from borealis.secrets import resolve_cluster_token
from borealis.settings import Settings
from borealis.wire import DriftReport, TrainerProgress, UploadResult

log = logging.getLogger(__name__)


class ControlPlane(Protocol):
    def learning_state(self) -> tuple[bool, str | None]:
        """(paused, live draft version)."""
        ...

    def fetch_draft(self, version: str, out_dir: Path) -> None:
        """Manifest and weights of a registered version (sha256 checked); raises ``ControlPlaneError``."""
        ...

    def report_drift(self, report: DriftReport) -> None:
        """Store a closed drift window with the control plane (best effort: never fails a round)."""
        ...

    def report_progress(self, progress: TrainerProgress) -> None:
        """How far learning has got, after every round (best effort: never fails a round)."""
        ...

    def publish(
        self,
        artifact_dir: Path,
        parent_version: str | None,
        shadow_eval: dict[str, dict[str, float]],
        training_metrics: dict[str, Any],
        data_window: dict[str, Any],
    ) -> UploadResult: ...


class HttpControlPlane:
    """``ControlPlane`` over the shared client; unreachable reads as paused, drift is best effort."""

    def __init__(self, settings: Settings, timeout_s: float = 10.0):
        token = resolve_cluster_token(settings.security)
        self.client = ControlPlaneClient(settings.resolved_control_plane_url, token, timeout_s)

    def learning_state(self) -> tuple[bool, str | None]:
        try:
            state = self.client.learning()
        except ControlPlaneError as exc:
            log.warning("control plane unreachable, treating learning as paused: %s", exc)
            return True, None
        return state.paused, state.live_version

    def report_drift(self, report: DriftReport) -> None:
        try:
            self.client.report_drift(report)
        except ControlPlaneError as exc:
            log.warning("drift window %d not reported: %s", report.index, exc)

    def report_progress(self, progress: TrainerProgress) -> None:
        try:
            self.client.report_progress(progress)
        except ControlPlaneError as exc:
            log.warning("progress of round %d not reported: %s", progress.round, exc)

    def fetch_draft(self, version: str, out_dir: Path) -> None:
        self.client.fetch_draft(version, out_dir)

    def publish(
        self,
        artifact_dir: Path,
        parent_version: str | None,
        shadow_eval: dict[str, dict[str, float]],
        training_metrics: dict[str, Any],
        data_window: dict[str, Any],
    ) -> UploadResult:
        return self.client.publish(
            artifact_dir,
            parent_version=parent_version,
            shadow_eval=shadow_eval,
            training_metrics=training_metrics,
            data_window=data_window,
        )
