"""Tasks of the training worker: ``describe``, and the self-rescheduling ``train_round`` loop.

The loop is one chain of tasks: each round schedules the next. A worker starting up opens a new
chain (its id stored in Redis), and a task of any older chain (e.g. redelivered after a crash, since
tasks ack late) sees it is superseded and ends, so exactly one chain runs per deployment. A round
that fails is logged and the chain continues after a pause: training never takes serving down, and
a bad round never stops learning for good.
"""

from __future__ import annotations

import logging
import os
import platform
import threading
import time
import uuid
from typing import Any

import redis
from celery.signals import worker_ready

from borealis.settings import get_settings
from worker.native_memory import release_free_memory
from worker.training.celery_app import app

log = logging.getLogger(__name__)

_trainer: Any = None  # the OnlineTrainer of this worker process, built on the first round that runs


@app.task(name="borealis.training.describe")
def describe() -> dict[str, object]:
    import torch

    settings = get_settings()
    return {
        "host": platform.node(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "nice": os.nice(0),
        "sched_idle": hasattr(os, "SCHED_IDLE") and os.sched_getscheduler(0) == os.SCHED_IDLE,
        "model_path": str(settings.resolved_model_path),
        "model_ready": (settings.resolved_model_path / "config.json").is_file(),
    }


def _chain_key() -> str:
    return f"{get_settings().redis_key_prefix}:trainer:chain"


def start_loop() -> str:
    """Open a new chain of rounds (superseding any other) and return its id."""
    chain = uuid.uuid4().hex
    client = redis.Redis.from_url(get_settings().redis_url)
    client.set(_chain_key(), chain)
    client.close()
    train_round.apply_async((chain,))
    return chain


def _watch_chain(interval_s: float) -> None:
    """A Redis restart without persistence forgets the chain id and its queued round: open a new one."""
    while True:
        time.sleep(interval_s)
        try:
            client = redis.Redis.from_url(get_settings().redis_url, socket_timeout=5)
            try:
                missing = client.get(_chain_key()) is None
            finally:
                client.close()
            if missing:
                log.warning("training loop lost (Redis restarted?): starting a new one")
                start_loop()
        except Exception as exc:  # Redis still down: look again later
            log.info("training loop watchdog: %s", exc)


@worker_ready.connect
def _autostart(**_: Any) -> None:
    settings = get_settings()
    if settings.trainer_autostart:
        start_loop()
        threading.Thread(
            target=_watch_chain,
            args=(settings.trainer_watchdog_seconds,),
            name="training-loop-watchdog",
            daemon=True,
        ).start()


@app.task(name="borealis.training.train_round")
def train_round(chain: str) -> dict[str, Any]:
    from worker.training.online import seconds_until_next

    global _trainer
    settings = get_settings()
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        current = client.get(_chain_key())
    finally:
        client.close()
    if current != chain:
        return {"status": "superseded"}
    try:
        if _trainer is None:
            from worker.training.control import HttpControlPlane
            from worker.training.online import build_trainer

            control = HttpControlPlane(settings)
            paused, _ = control.learning_state()
            report: dict[str, Any] = {"status": "paused"} if paused else {}
            if not paused:
                _trainer = build_trainer(settings, control)
        if _trainer is not None:
            report = _trainer.run_round()
            release_free_memory()  # a round's examples are gone: give their pages back
    except Exception as exc:  # a failed round must not end the loop
        log.exception("training round failed")
        report = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
    train_round.apply_async((chain,), countdown=seconds_until_next(report, settings))
    return report
