"""Draft registry, approval policy, promotion, rejection, rollback, auth — against a real control plane."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from backend.services.registry import shadow_score
from borealis.control_client import ControlPlaneClient, ControlPlaneError
from borealis.wire import SwapCommand, UploadResult, swap_channel
from tests.drafts import make_draft_artifact
from tests.stack import ADMIN_TOKEN, CLUSTER_TOKEN, Stack


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, redis_url: str, key_prefix: str
) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("drafts-home")
    with Stack(home, redis_url, key_prefix, tiny_model_dir, "tiny-llama") as stack:
        yield stack


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> list[Path]:
    root = tmp_path_factory.mktemp("draft-artifacts")
    return [make_draft_artifact(tiny_model_dir, root / f"d{seed}", seed) for seed in range(5)]


def publish(
    stack: Stack, artifact: Path, candidate: float, live: float, parent: str | None = None
) -> UploadResult:
    shadow = {"code": {"candidate": candidate, "live": live, "traces": 10}}
    return ControlPlaneClient(stack.base_url, CLUSTER_TOKEN).publish(artifact, parent, shadow)


def set_policy(stack: Stack, mode: str, margin: float = 0.05) -> None:
    response = stack.admin("PUT", "/api/policy", json={"mode": mode, "margin": margin, "reason": "test"})
    assert response.status_code == 200, response.text


def status_of(stack: Stack, version: str) -> str:
    return str(stack.admin("GET", f"/api/drafts/{version}").json()["status"])


def desired(stack: Stack) -> str | None:
    beat = {
        "worker_id": "probe",
        "url": "http://127.0.0.1:9",
        "model": "other-model",
        "max_context_tokens": 64,
    }
    reply = stack.cluster("POST", "/internal/workers/heartbeat", json=beat)
    assert reply.status_code == 200, reply.text
    return reply.json()["desired_draft_version"]


def test_operator_endpoints_need_the_admin_credential(stack: Stack) -> None:
    import httpx

    for method, path in [
        ("GET", "/api/drafts"),
        ("GET", "/api/workers"),
        ("POST", "/api/learning/pause"),
        ("GET", "/api/audit"),
        ("PUT", "/api/policy"),
    ]:
        anonymous = httpx.request(method, f"{stack.base_url}{path}", json={})
        assert anonymous.status_code == 401, (path, anonymous.text)
        wrong = httpx.request(
            method, f"{stack.base_url}{path}", json={}, headers={"authorization": "Bearer adm_wrong"}
        )
        assert wrong.status_code == 403, (path, wrong.text)
    internal = httpx.post(f"{stack.base_url}/internal/drafts", json={})
    assert internal.status_code == 401


def test_manual_policy_waits_for_approval_then_swaps(stack: Stack, artifacts: list[Path]) -> None:
    set_policy(stack, "manual")
    result = publish(stack, artifacts[0], candidate=2.0, live=1.0)
    version = result.version
    assert result.status == "pending_approval"
    assert desired(stack) != version
    approved = stack.admin("POST", f"/api/drafts/{version}/approve", json={"reason": "looks good"})
    assert approved.status_code == 200 and approved.json()["status"] == "live"
    # the score the policy judged by, served so the dashboard does not recompute it
    assert (approved.json()["shadow_candidate"], approved.json()["shadow_live"]) == (2.0, 1.0)
    assert desired(stack) == version
    actions = [(e["action"], e["target"]) for e in stack.admin("GET", "/api/audit?limit=20").json()]
    assert ("draft.approve", version) in actions and ("draft.promote", version) in actions
    again = stack.admin("POST", f"/api/drafts/{version}/approve", json={"reason": "twice"})
    assert again.status_code == 409


def test_auto_policy_promotes_only_above_margin_and_rollback_restores(
    stack: Stack, artifacts: list[Path]
) -> None:
    set_policy(stack, "auto", margin=0.10)
    live_before = desired(stack)
    assert live_before is not None
    better = publish(stack, artifacts[1], candidate=2.5, live=2.0, parent=live_before)
    assert better.status == "live"
    assert status_of(stack, live_before) == "retired"
    worse = publish(stack, artifacts[2], candidate=2.1, live=2.0, parent=better.version)
    assert worse.status == "candidate"  # +5% < 10% margin: held
    assert desired(stack) == better.version
    aliases = stack.admin("GET", "/api/drafts/aliases").json()
    assert aliases == {"champion": better.version, "challenger": worse.version, "previous": live_before}
    detail = stack.admin("GET", f"/api/drafts/{worse.version}").json()
    assert detail["lineage"][:2] == [better.version, live_before]
    rejected = stack.admin("POST", f"/api/drafts/{worse.version}/reject", json={"reason": "weak"})
    assert rejected.json()["status"] == "rejected"
    assert stack.admin("POST", f"/api/drafts/{worse.version}/rollback", json={}).status_code == 409
    rollback = stack.admin("POST", f"/api/drafts/{live_before}/rollback", json={"reason": "regression"})
    assert rollback.status_code == 200 and rollback.json()["status"] == "live"
    assert status_of(stack, better.version) == "rolled_back"
    assert desired(stack) == live_before
    aliases = stack.admin("GET", "/api/drafts/aliases").json()
    assert (aliases["champion"], aliases["previous"]) == (live_before, better.version)


def test_promotion_publishes_a_swap_command(stack: Stack, artifacts: list[Path], redis_url: str) -> None:
    set_policy(stack, "manual")
    client = redis.Redis.from_url(redis_url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(swap_channel(stack.key_prefix))
    time.sleep(0.2)
    version = publish(stack, artifacts[3], candidate=3.0, live=2.0).version
    stack.admin("POST", f"/api/drafts/{version}/promote", json={"reason": "operator override"})
    deadline = time.monotonic() + 10
    message = None
    while message is None and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=1)
    assert message is not None
    command = SwapCommand.model_validate_json(message["data"])
    assert command.draft_version == version and command.reason == "operator override"
    pubsub.close()


def test_corrupted_or_foreign_uploads_are_refused(
    stack: Stack, artifacts: list[Path], tmp_path: Path
) -> None:
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    (tampered / "manifest.json").write_text((artifacts[0] / "manifest.json").read_text())
    weights = bytearray((artifacts[0] / "draft.safetensors").read_bytes())
    (tampered / "draft.safetensors").write_bytes(bytes(weights))
    registration = {"artifact_sha256": "0" * 64, "artifact_bytes": len(weights), "manifest": {}}
    registered = stack.cluster("POST", "/internal/drafts", json=registration)
    assert registered.status_code == 200
    version = registered.json()["version"]
    refused = stack.cluster("PUT", f"/internal/drafts/{version}/artifact", content=bytes(weights))
    assert refused.status_code == 400 and "sha256" in refused.json()["error"]["message"]
    assert status_of(stack, version) == "uploading"
    audit = stack.admin("GET", "/api/audit?action=draft.artifact_refused").json()
    assert any(entry["target"] == version for entry in audit)

    pickle_like = b"\x80\x04\x95" + b"\x00" * 100  # not safetensors, whatever its hash
    (tampered / "draft.safetensors").write_bytes(pickle_like)
    with pytest.raises(ControlPlaneError, match="not a safetensors file"):
        ControlPlaneClient(stack.base_url, CLUSTER_TOKEN).publish(tampered)
    assert stack.cluster("GET", f"/internal/drafts/{version}/artifact").status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("PUT", "/api/policy", {"mode": "yolo"}, 400),
        ("PUT", "/api/policy", {"mode": "auto", "margin": -1}, 400),
        ("POST", "/api/drafts/v9999/approve", {}, 404),
        ("POST", "/api/drafts/../etc/approve", {}, 404),
        ("GET", "/api/drafts/not-a-version", None, 400),
        ("GET", "/api/drafts?status=bogus", None, 400),
        ("GET", "/api/audit?limit=100000", None, 400),
        ("POST", "/api/learning/pause", {"reason": "x" * 5000}, 400),
    ],
)
def test_bad_operator_input_is_a_clear_4xx(
    stack: Stack, method: str, path: str, body: object, status: int
) -> None:
    response = stack.admin(method, path, json=body) if body is not None else stack.admin(method, path)
    assert response.status_code == status, response.text


def test_learning_pause_and_resume_are_audited(stack: Stack) -> None:
    paused = stack.admin("POST", "/api/learning/pause", json={"reason": "investigating drift"})
    assert paused.json()["paused"] is True
    assert stack.cluster("GET", "/internal/learning").json()["paused"] is True
    stack.admin("POST", "/api/learning/resume", json={"reason": "done"})
    assert stack.admin("GET", "/api/learning").json()["paused"] is False
    actions = [e["action"] for e in stack.admin("GET", "/api/audit?limit=5").json()]
    assert actions[:2] == ["learning.resume", "learning.pause"]


def test_openapi_schema_is_valid_and_documents_operator_api(stack: Stack) -> None:
    from openapi_spec_validator import validate

    schema = json.loads(stack.admin("GET", "/openapi.json").text)
    validate(schema)
    for path in (
        "/api/drafts",
        "/api/drafts/{version_id}/rollback",
        "/api/policy",
        "/api/learning/pause",
        "/api/audit",
        "/api/workers",
        "/v1/chat/completions",
    ):
        assert path in schema["paths"], path


def test_shadow_score_uses_the_overall_entry_not_a_double_count() -> None:
    per_domain = {
        "code": {"candidate": 3.0, "live": 2.0, "traces": 30.0},
        "prose": {"candidate": 1.0, "live": 1.0, "traces": 10.0},
    }
    assert shadow_score(per_domain, "candidate") == (3.0 * 30 + 1.0 * 10) / 40
    with_overall = {**per_domain, "all": {"candidate": 2.4, "live": 1.7, "traces": 40.0}}
    assert shadow_score(with_overall, "candidate") == 2.4
    assert shadow_score(with_overall, "live") == 1.7
    assert shadow_score({}, "candidate") is None


def test_request_to_live_lag_is_reported(stack: Stack, artifacts: list[Path]) -> None:
    set_policy(stack, "manual")
    newest_trace = time.time() - 30.0
    result = ControlPlaneClient(stack.base_url, CLUSTER_TOKEN).publish(
        artifacts[4],
        shadow_eval={"code": {"candidate": 3.0, "live": 2.0, "traces": 10}},
        data_window={"from": newest_trace - 60.0, "to": newest_trace},
    )
    pending = stack.admin("GET", f"/api/drafts/{result.version}").json()
    assert pending["request_to_live_seconds"] is None  # not live yet
    approved = stack.admin("POST", f"/api/drafts/{result.version}/approve", json={"reason": "lag"}).json()
    assert 30.0 <= approved["request_to_live_seconds"] < 120.0


def test_the_drafts_cli_lists_with_aliases_and_decides_through_the_operator_api(
    stack: Stack, tiny_model_dir: Path, tmp_path: Path
) -> None:
    import os
    import subprocess

    from borealis.processes import cli_argv

    set_policy(stack, "manual")
    pending = publish(
        stack, make_draft_artifact(tiny_model_dir, tmp_path / "fresh", 9), candidate=2.9, live=2.0
    )
    env = {**os.environ, "BOREALIS_CONTROL_PLANE_URL": stack.base_url, "BOREALIS_ADMIN_TOKEN": ADMIN_TOKEN}

    def drafts(*args: str, token: str = ADMIN_TOKEN) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            cli_argv("drafts", *args),
            env={**env, "BOREALIS_ADMIN_TOKEN": token},
            capture_output=True,
            text=True,
        )

    listing = drafts("ls")
    assert listing.returncode == 0, listing.stderr
    lines = {line.split()[0]: line for line in listing.stdout.splitlines()[1:]}
    assert "pending_approval" in lines[pending.version] and "@challenger" in lines[pending.version]
    assert sum("@champion" in line for line in lines.values()) == 1
    approved = drafts("approve", pending.version, "--reason", "cli test")
    assert approved.returncode == 0 and json.loads(approved.stdout)["status"] == "live"
    assert json.loads(drafts("aliases").stdout)["champion"] == pending.version
    audit = stack.admin("GET", "/api/audit", params={"action": "draft.approve"}).json()
    assert any(entry["target"] == pending.version and entry["reason"] == "cli test" for entry in audit)
    tagged = drafts("annotate", pending.version, "--tag", "team=search", "--note", "first cli draft")
    assert tagged.returncode == 0, tagged.stderr
    assert json.loads(drafts("show", pending.version).stdout)["tags"] == {"team": "search"}
    refused = drafts("ls", token="adm_wrong")
    assert refused.returncode == 1 and "403" in refused.stderr


def test_tags_and_notes_are_set_deleted_bounded_and_audited(
    stack: Stack, tiny_model_dir: Path, tmp_path: Path
) -> None:
    set_policy(stack, "manual")
    version = publish(stack, make_draft_artifact(tiny_model_dir, tmp_path / "t", 21), 2.0, 1.0).version
    body = {
        "set_tags": {"team": "search", "dataset": "week-48"},
        "note": "trained on the new docs",
        "reason": "x",
    }
    first = stack.admin("PATCH", f"/api/drafts/{version}", json=body)
    assert first.status_code == 200, first.text
    assert first.json()["tags"] == {"team": "search", "dataset": "week-48"}
    second = stack.admin("PATCH", f"/api/drafts/{version}", json={"delete_tags": ["dataset"], "reason": "y"})
    assert second.json()["tags"] == {"team": "search"} and second.json()["note"] == "trained on the new docs"
    entries = stack.admin("GET", "/api/audit", params={"action": "draft.annotate"}).json()
    assert [e["reason"] for e in entries if e["target"] == version][:2] == ["y", "x"]
    for bad in (
        {"set_tags": {"bad key!": "v"}},
        {"set_tags": {"k": "v" * 257}},
        {"set_tags": {f"k{i}": "v" for i in range(33)}},
        {"note": "n" * 5000},
        {"rename": "v9"},
    ):
        refused = stack.admin("PATCH", f"/api/drafts/{version}", json=bad)
        assert refused.status_code == 400, (bad, refused.text)
    many = {"set_tags": {f"more{i}": "v" for i in range(32)}}
    assert stack.admin("PATCH", f"/api/drafts/{version}", json=many).status_code == 400  # 33 with "team"
    assert stack.admin("PATCH", "/api/drafts/v9999", json={"note": "x"}).status_code == 404


def test_retention_prunes_old_weights_but_never_live_or_previous(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, redis_url: str, key_prefix: str
) -> None:
    home = tmp_path_factory.mktemp("retention-home")
    root = tmp_path_factory.mktemp("retention-artifacts")
    artifacts = [make_draft_artifact(tiny_model_dir, root / f"r{seed}", 40 + seed) for seed in range(4)]
    extra = {"BOREALIS_ARTIFACT_KEEP_VERSIONS": "3"}
    with Stack(home, redis_url, key_prefix, tiny_model_dir, "tiny-llama", extra_env=extra) as small:
        set_policy(small, "auto", margin=0.0)
        first = publish(small, artifacts[0], candidate=2.0, live=1.0)
        second = publish(small, artifacts[1], candidate=2.5, live=2.0, parent=first.version)
        third = publish(small, artifacts[2], candidate=3.0, live=2.5, parent=second.version)
        assert (first.status, second.status, third.status) == ("live", "live", "live")
        weights = home / "artifacts"
        assert (weights / first.version / "draft.safetensors").is_file()
        fourth = publish(small, artifacts[3], candidate=2.0, live=3.0, parent=third.version)
        assert fourth.status == "candidate"  # the fourth version pushes the first past the newest 3
        assert not (weights / first.version).exists()
        assert small.admin("GET", f"/api/drafts/{first.version}").json()["artifact_uploaded"] is False
        pruned = small.admin("GET", "/api/audit", params={"action": "draft.artifact_pruned"}).json()
        assert [e["target"] for e in pruned] == [first.version]
        assert small.cluster("GET", f"/internal/drafts/{first.version}/manifest").status_code == 404
        refused = small.admin("POST", f"/api/drafts/{first.version}/rollback", json={"reason": "gone"})
        assert refused.status_code == 409
        # @previous keeps its weights whatever its age: a rollback can always restore it
        assert (weights / second.version / "draft.safetensors").is_file()
        restored = small.admin("POST", f"/api/drafts/{second.version}/rollback", json={"reason": "ok"})
        assert restored.status_code == 200 and restored.json()["status"] == "live"
