"""Hot swap end to end: control plane, Redis, a real inference worker, real draft artifacts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from borealis.control_client import ControlPlaneClient
from tests.drafts import make_draft_artifact
from tests.procs import stop, wait_until
from tests.stack import CLUSTER_TOKEN, Stack, Traffic

pytestmark = pytest.mark.slow
MODEL = "tiny-llama"


@pytest.fixture
def stack(tmp_path: Path, tiny_model_dir: Path, redis_url: str, key_prefix: str) -> Iterator[Stack]:
    with Stack(tmp_path / "home", redis_url, key_prefix, tiny_model_dir, MODEL) as stack:
        assert stack.admin("PUT", "/api/policy", json={"mode": "manual"}).status_code == 200
        yield stack


def worker_versions(stack: Stack) -> dict[str, str | None]:
    return {w["id"]: w["draft_version"] for w in stack.admin("GET", "/api/workers").json() if w["healthy"]}


def audit_actions(stack: Stack, target: str) -> list[str]:
    return [e["action"] for e in stack.admin("GET", "/api/audit?limit=200").json() if e["target"] == target]


def test_approve_swaps_every_request_succeeds_and_bad_artifacts_are_refused(
    stack: Stack, tiny_model_dir: Path, tmp_path: Path
) -> None:
    stack.start_worker("w1")
    first = ControlPlaneClient(stack.base_url, CLUSTER_TOKEN).publish(
        make_draft_artifact(tiny_model_dir, tmp_path / "a", 1)
    )
    assert first.status == "pending_approval"
    with Traffic(stack.base_url, MODEL) as traffic:
        stack.admin("POST", f"/api/drafts/{first.version}/approve", json={"reason": "ship it"})
        wait_until(lambda: worker_versions(stack).get("w1") == first.version, 60, "worker swapped")
        wait_until(lambda: len(traffic.statuses) >= 10, 60, "traffic after the swap")
    assert traffic.statuses and set(traffic.statuses) == {200}
    assert "swap.ack" in audit_actions(stack, first.version)
    assert httpx.get(f"{stack.base_url}/ready").json()["workers_on_desired"] == ["w1"]
    stats = httpx.post(
        f"{stack.base_url}/v1/completions",
        timeout=60,
        json={"model": MODEL, "prompt": "hi", "max_tokens": 4, "temperature": 0},
    ).json()["spec_decode"]
    assert stats["draft_version"] == first.version

    # A corrupted artifact on the serving side is refused by the worker's sha256 check.
    second = ControlPlaneClient(stack.base_url, CLUSTER_TOKEN).publish(
        make_draft_artifact(tiny_model_dir, tmp_path / "b", 2)
    )
    stored = stack.home / "artifacts" / second.version / "draft.safetensors"
    data = bytearray(stored.read_bytes())
    data[-1] ^= 0xFF
    stored.write_bytes(bytes(data))
    stack.admin("POST", f"/api/drafts/{second.version}/approve", json={"reason": "try"})
    wait_until(lambda: "swap.failed" in audit_actions(stack, second.version), 60, "swap refused")
    swaps = {
        row.split('result="')[1].split('"')[0]: float(row.rsplit(" ", 1)[1])
        for row in httpx.get(f"{stack.base_url}/metrics").text.splitlines()
        if row.startswith("borealis:swaps_total{")
    }
    assert swaps["ok"] >= 1 and swaps["failed"] >= 1
    assert worker_versions(stack)["w1"] == first.version
    # Nobody holds the desired version, yet the worker serves on the old draft: ready, not converged.
    readiness = httpx.get(f"{stack.base_url}/ready")
    assert readiness.status_code == 200 and readiness.json()["converged"] is False
    assert readiness.json()["workers_on_desired"] == []
    kept = [p for p in (stack.home / "worker-drafts").rglob("*") if p.is_file()]
    assert not kept, f"downloads stay on the worker's disk after loading or refusing: {kept}"

    # Roll back to the good version; a restarted worker reconciles to it with no command sent.
    assert stack.admin("POST", f"/api/drafts/{first.version}/rollback", json={}).status_code == 200
    stop(stack.workers.pop("w1"))
    stack.start_worker("w2")
    wait_until(lambda: worker_versions(stack).get("w2") == first.version, 60, "restarted worker reconciled")
    wait_until(lambda: httpx.get(f"{stack.base_url}/ready").status_code == 200, 30, "ready again")
