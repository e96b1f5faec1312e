"""A real Celery training worker (solo pool) on real Redis answers tasks."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from celery import Celery

from borealis.processes import OWN_AUTOGROUP
from borealis.settings import Settings
from tests.procs import cli_argv, start, stop
from worker.training.celery_factory import create_celery


def test_trainer_runs_tasks_from_redis(base_env: dict[str, str], tmp_path: Path) -> None:
    log = tmp_path / "trainer.log"
    trainer = start(cli_argv("worker", "train"), {**base_env, "BOREALIS_TRAINER_NICE": "7"}, log)
    try:
        settings = Settings(
            redis_url=base_env["BOREALIS_REDIS_URL"], redis_key_prefix=base_env["BOREALIS_REDIS_KEY_PREFIX"]
        )
        app: Celery = create_celery(settings)
        result = app.send_task("borealis.training.describe").get(timeout=90)
        assert result["torch"].startswith("2.13.0")
        assert result["threads"] == 1  # BOREALIS_THREADS applied in the worker
        assert result["nice"] == min(19, os.nice(0) + 7)  # serving on the same machine comes first
        assert result["sched_idle"] is (sys.platform == "linux")
        # its own session (as `borealis up` starts it) at the lowest weight where sessions share the CPU first
        assert result["session_nice"] == (19 if OWN_AUTOGROUP.exists() else None)
    finally:
        assert stop(trainer) == 0, log.read_text()[-2000:]
