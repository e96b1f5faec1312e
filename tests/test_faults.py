"""Faults survived with real processes: a control-plane restart, and Redis going away and coming back."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest
import redis

from borealis.control_client import ControlPlaneClient
from borealis.embedded_redis import start_embedded_redis
from tests.drafts import make_draft_artifact
from tests.procs import cli_argv, free_port, start, stop, wait_until
from tests.stack import CLUSTER_TOKEN, Stack, Traffic

REDIS_PASSWORD = "test-" + "redis-password"  # the embedded server always requires one

pytestmark = pytest.mark.slow
MODEL = "tiny-llama"


def test_control_plane_restart_keeps_registry_policy_audit_and_learning(
    database_url: str, tmp_path: Path, tiny_model_dir: Path, redis_url: str, key_prefix: str
) -> None:
    stack = Stack(
        tmp_path / "home",
        redis_url,
        key_prefix,
        tiny_model_dir,
        MODEL,
        {"BOREALIS_DATABASE_URL": database_url},
    )
    try:
        stack.start_api()
        stack.admin("PUT", "/api/policy", json={"mode": "manual", "margin": 0.2}).raise_for_status()
        version = ControlPlaneClient(stack.base_url, CLUSTER_TOKEN).publish(
            make_draft_artifact(tiny_model_dir, tmp_path / "d", 1)
        )
        stack.admin(
            "POST", f"/api/drafts/{version.version}/approve", json={"reason": "r1"}
        ).raise_for_status()
        stack.admin("POST", "/api/learning/pause", json={"reason": "before restart"}).raise_for_status()
        before = stack.admin("GET", "/api/audit?limit=100").json()
        assert stack.api is not None
        stop(stack.api)  # SIGTERM: uvicorn shuts down gracefully, then re-raises the signal
        assert "Application shutdown complete" in (stack.home / "api.log").read_text()
        stack.start_api()
        assert stack.admin("GET", "/api/policy").json() == {"mode": "manual", "margin": 0.2, "reason": ""}
        assert stack.admin("GET", "/api/learning").json()["paused"] is True
        assert stack.admin("GET", f"/api/drafts/{version.version}").json()["status"] == "live"
        assert stack.admin("GET", "/api/audit?limit=100").json() == before
        artifact = stack.cluster("GET", f"/internal/drafts/{version.version}/artifact")
        assert artifact.status_code == 200 and len(artifact.content) > 0
    finally:
        stack.stop()


def test_serving_survives_redis_outage_and_reconnects(tmp_path: Path, tiny_model_dir: Path) -> None:
    port = free_port()
    redis_dir = tmp_path / "redis"
    redis_process = start_embedded_redis(redis_dir, port, redis_dir / "redis.log", REDIS_PASSWORD)
    stack = Stack(
        tmp_path / "home", f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0", "outage", tiny_model_dir, MODEL
    )
    body = {"model": MODEL, "prompt": "hello there", "max_tokens": 8, "temperature": 0}

    def complete() -> int:
        return httpx.post(f"{stack.base_url}/v1/completions", json=body, timeout=60).status_code

    def bus() -> dict[str, int | None]:
        return stack.admin("GET", "/api/tracebus").json()  # type: ignore[no-any-return]

    trainer_env = {
        **stack.env,
        "BOREALIS_TRAINER_MIN_RECORDS": "2",
        "BOREALIS_TRAINER_STEPS_PER_ROUND": "1",
        "BOREALIS_TRAINER_CANDIDATE_EVERY_ROUNDS": "1000",
        "BOREALIS_TRAINER_BATCH_TOKENS": "256",
        "BOREALIS_DRAFT_VOCAB_SIZE": "256",
        "BOREALIS_TRAINER_WATCHDOG_SECONDS": "1",
    }
    client = redis.Redis(port=port, password=REDIS_PASSWORD)

    def trainer_reading() -> bool:
        try:
            return any(group["name"] for group in client.xinfo_groups(f"{stack.key_prefix}:traces"))
        except redis.RedisError:
            return False

    trainer = None
    try:
        stack.start_api()
        stack.start_worker("w1")
        trainer = start(cli_argv("worker", "train"), trainer_env, stack.home / "trainer.log")
        assert complete() == 200
        wait_until(lambda: (bus()["stream_length"] or 0) >= 1, 20, "first trace in the stream")
        wait_until(trainer_reading, 60, "trainer reading the stream", trainer, stack.home / "trainer.log")
        redis_process.terminate()
        redis_process.wait(timeout=10)
        assert [complete() for _ in range(3)] == [200, 200, 200]  # serving does not need Redis
        wait_until(lambda: bus()["dropped"] >= 1, 30, "drops reported while Redis is down")
        assert bus()["stream_length"] is None
        redis_process = start_embedded_redis(redis_dir, port, redis_dir / "redis.log", REDIS_PASSWORD)
        exported_before = bus()["exported"]
        wait_until(
            lambda: complete() == 200 and bus()["exported"] > exported_before,
            60,
            "exporter reconnected by itself",
        )
        wait_until(lambda: (bus()["stream_length"] or 0) >= 1, 30, "traces flow again")
        # The trainer lived through the outage (kombu's Redis transport used to end it while
        # restoring its unacknowledged round); the watchdog re-opens its round loop, which Redis
        # forgot, and it reads traces again.
        assert trainer.poll() is None, (stack.home / "trainer.log").read_text()[-3000:]
        wait_until(
            lambda: complete() == 200 and trainer_reading(),
            90,
            "trainer reading again",
            trainer,
            stack.home / "trainer.log",
        )
    finally:
        if trainer is not None:
            stop(trainer)
        stack.stop()
        if redis_process.poll() is None:
            redis_process.terminate()
            try:
                redis_process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                redis_process.kill()


def test_worker_killed_during_swap_fails_cleanly_and_reconciles(
    tmp_path: Path, tiny_model_dir: Path, redis_url: str, key_prefix: str
) -> None:
    stack = Stack(
        tmp_path / "home", redis_url, key_prefix, tiny_model_dir, MODEL, {"BOREALIS_AUTO_ROLLBACK": "false"}
    )

    def versions() -> dict[str, str | None]:
        return {
            w["id"]: w["draft_version"] for w in stack.admin("GET", "/api/workers").json() if w["healthy"]
        }

    try:
        stack.start_api()
        stack.admin("PUT", "/api/policy", json={"mode": "manual"}).raise_for_status()
        stack.start_worker("w1")
        stack.start_worker("w2")
        first = ControlPlaneClient(stack.base_url, CLUSTER_TOKEN).publish(
            make_draft_artifact(tiny_model_dir, tmp_path / "a", 1)
        )
        second = ControlPlaneClient(stack.base_url, CLUSTER_TOKEN).publish(
            make_draft_artifact(tiny_model_dir, tmp_path / "b", 2)
        )
        stack.admin("POST", f"/api/drafts/{first.version}/approve", json={}).raise_for_status()
        wait_until(
            lambda: set(versions().values()) == {first.version} and len(versions()) == 2, 60, "v1 live"
        )
        with Traffic(stack.base_url, MODEL) as traffic:
            wait_until(lambda: len(traffic.statuses) >= 5, 30, "traffic flowing")
            stack.admin("POST", f"/api/drafts/{second.version}/approve", json={}).raise_for_status()
            stack.workers["w1"].kill()  # dies while the swap is in progress
            wait_until(lambda: versions().get("w2") == second.version, 60, "survivor swapped")
            served_before_restart = len(traffic.statuses)
            wait_until(
                lambda: len(traffic.statuses) >= served_before_restart + 5, 30, "traffic on the survivor"
            )
            stack.start_worker("w1")
            wait_until(lambda: versions().get("w1") == second.version, 60, "restarted worker reconciled")
        assert -1 not in traffic.statuses  # nothing hung
        assert set(traffic.statuses) <= {200, 502, 503}, set(traffic.statuses)
        assert traffic.statuses.count(200) >= len(traffic.statuses) - 3  # at most the in-flight ones failed
    finally:
        stack.stop()
