"""The whole flywheel with real processes: served traffic → traces → Celery trainer → candidate →
policy → hot swap, and a trainer killed mid-flight while serving carries on untouched."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.procs import cli_argv, start, stop, wait_until
from tests.stack import Stack, Traffic
from tests.training.test_celery_trainer import checkpoint_round

pytestmark = pytest.mark.slow
MODEL = "tiny-llama"
TRAINER = {
    "BOREALIS_TRAINER_MIN_RECORDS": "4",
    "BOREALIS_TRAINER_STEPS_PER_ROUND": "2",
    "BOREALIS_TRAINER_READ_BATCH": "16",
    "BOREALIS_TRAINER_CANDIDATE_EVERY_ROUNDS": "2",
    "BOREALIS_TRAINER_BATCH_TOKENS": "256",
    "BOREALIS_DRAFT_VOCAB_SIZE": "256",
    "BOREALIS_AUTO_ROLLBACK": "false",
    "BOREALIS_DRIFT_WINDOW_REQUESTS": "4",
}


def test_served_traffic_trains_a_draft_that_goes_live(
    tmp_path: Path, tiny_model_dir: Path, redis_url: str, key_prefix: str
) -> None:
    stack = Stack(tmp_path / "home", redis_url, key_prefix, tiny_model_dir, MODEL, TRAINER)
    trainer_log = stack.home / "trainer.log"

    def trainer_versions() -> list[dict[str, object]]:
        """Registered trainer drafts whose upload finished (``uploading`` is the moment in between)."""
        drafts = stack.admin("GET", "/api/drafts").json()
        return [v for v in drafts if v["source"] == "trainer" and v["status"] != "uploading"]

    def worker_version() -> object:
        workers = stack.admin("GET", "/api/workers").json()
        return workers[0]["draft_version"] if workers else None

    try:
        stack.start_api()
        stack.admin("PUT", "/api/policy", json={"mode": "auto", "margin": 0.0}).raise_for_status()
        stack.start_worker("w1")
        trainer = start(cli_argv("worker", "train"), stack.env, trainer_log)
        with Traffic(stack.base_url, MODEL) as traffic:
            wait_until(lambda: bool(trainer_versions()), 180, "a trainer candidate", trainer, trainer_log)
            first = trainer_versions()[-1]
            assert first["shadow_eval"] and first["training_metrics"]
            # the worker shipped each trace's target features: the trainer ran no target prefill
            training = first["training_metrics"]
            assert isinstance(training, dict) and training["examples_from_features"] > 0
            assert training["examples_by_prefill"] == 0
            assert first["status"] == "live"  # nothing was live: the auto policy promotes the first draft
            wait_until(lambda: worker_version() == first["id"], 60, "worker serving the trained draft")
            rounds_before = checkpoint_round(stack.home)
            trainer.send_signal(signal.SIGKILL)
            trainer.wait()
            served_while_down = len(traffic.statuses)
            wait_until(
                lambda: len(traffic.statuses) >= served_while_down + 5, 30, "serving without a trainer"
            )
            trainer = start(cli_argv("worker", "train"), stack.env, trainer_log)
            wait_until(
                lambda: "resumed at round" in trainer_log.read_text(),
                120,
                "trainer resumed",
                trainer,
                trainer_log,
            )
            wait_until(lambda: checkpoint_round(stack.home) > rounds_before, 120, "rounds go on")
        assert traffic.statuses and set(traffic.statuses) == {200}
        windows = stack.admin("GET", "/api/drift").json()["windows"]
        assert windows and all(w["trainer"] and w["requests"] == 4 for w in windows)
        stop(trainer)
        kept = [
            p for d in ("candidates", "live") for p in (stack.home / "trainer" / d).rglob("*") if p.is_file()
        ]
        assert not kept, f"published candidates and loaded live drafts stay on the trainer's disk: {kept}"
    finally:
        stack.stop()
