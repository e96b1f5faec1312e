"""The one client of the control plane's ``/internal`` API, for inference workers, trainers and the CLI.

Torch-free. Every path a worker, a trainer or ``borealis draft publish`` calls is here, each sending
and parsing the ``borealis.wire`` message for it, with the cluster token. Downloads verify the
artifact's sha256 while they stream, so a corrupted or substituted file is never read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from borealis.files import sha256_file
from borealis.wire import (
    MANIFEST_FILE,
    WEIGHTS_FILE,
    DraftManifest,
    DraftRegistration,
    DraftSource,
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

Reply = TypeVar("Reply", bound=BaseModel)


class ControlPlaneError(RuntimeError):
    """The control plane refused a call or could not be reached (the message says which)."""


class ArtifactMismatch(ControlPlaneError):
    """A downloaded artifact's sha256 differs from the registered one: refused, never read."""


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            yield block


def _refusal(response: httpx.Response, what: str) -> ControlPlaneError:
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:500]
    return ControlPlaneError(f"{what} refused ({response.status_code}): {message}")


class ControlPlaneClient:
    """One connection pool for every call: a worker beats every few seconds and a trainer asks for
    the learning state before each optimizer step, so connections are kept, not opened per call."""

    def __init__(self, base_url: str, cluster_token: str, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url, headers={"authorization": f"Bearer {cluster_token}"}, timeout=timeout_s
        )

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, body: BaseModel | None, reply: type[Reply]) -> Reply:
        """One JSON call; transport errors and refusals both raise ``ControlPlaneError``."""
        content = body.model_dump_json() if body is not None else None
        headers = {"content-type": "application/json"} if body is not None else {}
        try:
            response = self._http.request(method, path, content=content, headers=headers)
        except httpx.HTTPError as exc:
            raise ControlPlaneError(f"{method} {path}: {exc}") from exc
        if response.status_code >= 400:
            raise _refusal(response, f"{method} {path}")
        try:
            return reply.model_validate_json(response.content)
        except ValueError as exc:
            raise ControlPlaneError(f"{method} {path}: unreadable reply: {exc}") from exc

    # -- inference workers --------------------------------------------------------------------

    def heartbeat(self, registration: WorkerRegistration) -> HeartbeatReply:
        return self._call("POST", "/internal/workers/heartbeat", registration, HeartbeatReply)

    def swap_ack(self, ack: SwapAck) -> None:
        self._call("POST", "/internal/workers/swap-ack", ack, Received)

    # -- training workers ---------------------------------------------------------------------

    def learning(self) -> LearningState:
        return self._call("GET", "/internal/learning", None, LearningState)

    def report_drift(self, report: DriftReport) -> None:
        self._call("POST", "/internal/drift", report, Received)

    def report_progress(self, progress: TrainerProgress) -> None:
        self._call("POST", "/internal/trainers/progress", progress, Received)

    # -- artifacts ------------------------------------------------------------------------------

    def fetch_draft(self, version: str, directory: Path) -> DraftManifest:
        """Manifest and weights of a registered version into ``directory``, sha256 checked as they stream."""
        info = self._call("GET", f"/internal/drafts/{version}/manifest", None, DraftManifest)
        directory.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        try:
            with self._http.stream("GET", f"/internal/drafts/{version}/artifact", timeout=60) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _refusal(response, f"artifact of {version}")
                with (directory / WEIGHTS_FILE).open("wb") as handle:
                    for chunk in response.iter_bytes():
                        digest.update(chunk)
                        handle.write(chunk)
        except httpx.HTTPError as exc:
            raise ControlPlaneError(f"artifact of {version}: {exc}") from exc
        if digest.hexdigest() != info.sha256:
            (directory / WEIGHTS_FILE).unlink(missing_ok=True)
            raise ArtifactMismatch(f"sha256 mismatch for {version}: refusing the artifact")
        manifest = {**info.manifest, "sha256": info.sha256, "version": version}
        (directory / MANIFEST_FILE).write_text(json.dumps(manifest))
        return info

    def publish(
        self,
        artifact_dir: Path,
        parent_version: str | None = None,
        shadow_eval: dict[str, dict[str, float]] | None = None,
        training_metrics: dict[str, Any] | None = None,
        data_window: dict[str, Any] | None = None,
        source: DraftSource = "trainer",
        timeout_s: float = 120.0,
    ) -> UploadResult:
        """Register, then stream the weights, which the control plane verifies before the version
        becomes a candidate: two steps so it can refuse before any weights move."""
        weights = artifact_dir / WEIGHTS_FILE
        registration = DraftRegistration(
            parent_version=parent_version,
            artifact_sha256=sha256_file(weights),
            artifact_bytes=weights.stat().st_size,
            manifest=json.loads((artifact_dir / MANIFEST_FILE).read_text()),
            data_window=data_window or {},
            training_metrics=training_metrics or {},
            shadow_eval=shadow_eval or {},
            source=source,
        )
        registered = self._call("POST", "/internal/drafts", registration, RegisteredDraft)
        if registered.artifact_uploaded:  # a retry of a publish that already went through
            return UploadResult(version=registered.version, status=registered.status)
        try:
            uploaded = self._http.put(
                registered.upload_path,
                content=_chunks(weights),
                headers={"content-type": "application/octet-stream"},
                timeout=timeout_s,
            )
        except httpx.HTTPError as exc:
            raise ControlPlaneError(f"upload of {registered.version}: {exc}") from exc
        if uploaded.status_code >= 400:
            raise _refusal(uploaded, "upload")
        return UploadResult.model_validate_json(uploaded.content)
