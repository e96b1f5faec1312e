"""Publishes a draft artifact directory to the control plane (trainer and operator CLI share it).

Two steps so the control plane can refuse early: register the metadata (sha256, size, manifest,
evaluation), then stream the safetensors weights, which the control plane verifies before the
version becomes a candidate.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from borealis.files import sha256_file
from borealis.wire import DraftRegistration, DraftSource

WEIGHTS_FILE = "draft.safetensors"
MANIFEST_FILE = "manifest.json"


class PublishError(RuntimeError):
    """The control plane refused the draft (message says why)."""


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            yield block


def _raise_for(response: httpx.Response, what: str) -> None:
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:500]
        raise PublishError(f"{what} refused ({response.status_code}): {message}")


def publish_draft(
    control_plane_url: str,
    cluster_token: str,
    artifact_dir: Path,
    parent_version: str | None = None,
    shadow_eval: dict[str, dict[str, float]] | None = None,
    training_metrics: dict[str, Any] | None = None,
    data_window: dict[str, Any] | None = None,
    source: DraftSource = "trainer",
    timeout_s: float = 120.0,
) -> dict[str, str]:
    """Register and upload; returns ``{"version": ..., "status": ...}`` as the control plane decided."""
    weights = artifact_dir / WEIGHTS_FILE
    manifest = json.loads((artifact_dir / MANIFEST_FILE).read_text())
    registration = DraftRegistration(
        parent_version=parent_version,
        artifact_sha256=sha256_file(weights),
        artifact_bytes=weights.stat().st_size,
        manifest=manifest,
        data_window=data_window or {},
        training_metrics=training_metrics or {},
        shadow_eval=shadow_eval or {},
        source=source,
    )
    headers = {"authorization": f"Bearer {cluster_token}"}
    with httpx.Client(base_url=control_plane_url.rstrip("/"), headers=headers, timeout=timeout_s) as client:
        registered = client.post(
            "/internal/drafts",
            content=registration.model_dump_json(),
            headers={"content-type": "application/json"},
        )
        _raise_for(registered, "registration")
        upload_path = registered.json()["upload_path"]
        uploaded = client.put(
            upload_path, content=_chunks(weights), headers={"content-type": "application/octet-stream"}
        )
        _raise_for(uploaded, "upload")
        result: dict[str, str] = uploaded.json()
        return result
