"""The trainer's view of the control plane: learning on or off, the live draft, publishing candidates.

Any failure to reach the control plane reads as "paused": a trainer that cannot publish or learn the
live version should not spend CPU next to serving on work nobody can use.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Protocol

import httpx

from borealis.publish import publish_draft
from borealis.secrets import resolve_cluster_token
from borealis.settings import Settings
from borealis.wire import DriftReport
from worker.draft.io import MANIFEST_FILE, WEIGHTS_FILE

log = logging.getLogger(__name__)


class ControlPlane(Protocol):
    def learning_state(self) -> tuple[bool, str | None]:
        """(paused, live draft version)."""
        ...

    def fetch_draft(self, version: str, out_dir: Path) -> None: ...

    def report_drift(self, report: DriftReport) -> None:
        """Store a closed drift window with the control plane (best effort: never fails a round)."""
        ...

    def publish(
        self,
        artifact_dir: Path,
        parent_version: str | None,
        shadow_eval: dict[str, dict[str, float]],
        training_metrics: dict[str, Any],
        data_window: dict[str, Any],
    ) -> dict[str, str]: ...


class HttpControlPlane:
    def __init__(self, settings: Settings, timeout_s: float = 10.0):
        self.url = settings.resolved_control_plane_url.rstrip("/")
        self.token = resolve_cluster_token(settings.cluster_token, settings.cluster_token_file)
        self.timeout_s = timeout_s

    def _get(self, path: str) -> httpx.Response:
        headers = {"authorization": f"Bearer {self.token}"}
        response = httpx.get(self.url + path, headers=headers, timeout=self.timeout_s)
        response.raise_for_status()
        return response

    def learning_state(self) -> tuple[bool, str | None]:
        try:
            body = self._get("/internal/learning").json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("control plane unreachable, treating learning as paused: %s", exc)
            return True, None
        live = body.get("live_version")
        return bool(body.get("paused", True)), str(live) if live else None

    def report_drift(self, report: DriftReport) -> None:
        headers = {"authorization": f"Bearer {self.token}", "content-type": "application/json"}
        try:
            response = httpx.post(
                self.url + "/internal/drift",
                content=report.model_dump_json(),
                headers=headers,
                timeout=self.timeout_s,
            )
            response.raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("drift window %d not reported: %s", report.index, exc)

    def fetch_draft(self, version: str, out_dir: Path) -> None:
        """Manifest and weights of a registered version (``load_draft`` then checks the sha256)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        info = self._get(f"/internal/drafts/{version}/manifest").json()
        manifest = {**info["manifest"], "sha256": info["sha256"], "version": version}
        (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest))
        (out_dir / WEIGHTS_FILE).write_bytes(self._get(f"/internal/drafts/{version}/artifact").content)

    def publish(
        self,
        artifact_dir: Path,
        parent_version: str | None,
        shadow_eval: dict[str, dict[str, float]],
        training_metrics: dict[str, Any],
        data_window: dict[str, Any],
    ) -> dict[str, str]:
        return publish_draft(
            self.url,
            self.token,
            artifact_dir,
            parent_version=parent_version,
            shadow_eval=shadow_eval,
            training_metrics=training_metrics,
            data_window=data_window,
        )
