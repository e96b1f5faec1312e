"""Tasks of the training worker: ``describe``, and the self-rescheduling ``train_round`` loop.

The loop is one chain of tasks: each round schedules the next. A worker starting up opens a new
chain (its id stored in Redis), and a task of any older chain (e.g. redelivered after a crash, since
tasks ack late) sees it is superseded and ends, so exactly one chain runs per deployment. A round
that fails is logged and the chain continues after a pause: training never takes serving down, and
a bad round never stops learning for good.

The chain id is a lease: it expires ``trainer_chain_lease_seconds`` after the last sign of life (a
round refreshes it while it runs). A training worker killed while it held the chain's next round
lets the lease lapse, and the watchdog of any surviving worker opens a new chain.
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

from borealis.processes import session_nice
from borealis.settings import Settings, get_settings
from worker.native_memory import release_free_memory
from worker.training.celery_app import app
from worker.training.reports import RoundReport

log = logging.getLogger(__name__)

_trainer: Any = None  # the OnlineTrainer of this worker process, built on the first round that runs
_unsupported: str | None = None  # why this worker's target cannot train a draft, once known


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
        "session_nice": session_nice(),
        "model_path": str(settings.resolved_model_path),
        "model_ready": (settings.resolved_model_path / "config.json").is_file(),
    }


def _chain_key() -> str:
    return f"{get_settings().redis_key_prefix}:trainer:chain"


def _redis() -> redis.Redis:
    return redis.Redis.from_url(get_settings().redis_url, socket_timeout=5, decode_responses=True)


def start_loop(only_if_none: bool = False) -> str | None:
    """Open a new chain of rounds (superseding any other) and return its id; with ``only_if_none``,
    only when no chain holds the lease (several watchdogs may notice a lapse at once)."""
    chain = uuid.uuid4().hex
    client = _redis()
    try:
        taken = client.set(_chain_key(), chain, ex=_lease_seconds(), nx=only_if_none)
    finally:
        client.close()
    if not taken:
        return None
    train_round.apply_async((chain, 0))
    return chain


def claim_round(chain: str, seq: int) -> bool:
    """The idempotency token of round ``seq`` of ``chain``: true for its first execution only, so a
    redelivered task (Celery acks late) is a no-op instead of a second round running beside it."""
    client = _redis()
    try:
        return bool(client.set(f"{_chain_key()}:{chain}:{seq}", 1, nx=True, ex=7 * 86_400))
    finally:
        client.close()


def _lease_seconds() -> int:
    return max(1, round(get_settings().trainer_chain_lease_seconds))


class _Lease:
    """Keeps this chain's lease alive while a round runs here; stops if another chain took over."""

    def __init__(self, chain: str) -> None:
        self._chain = chain
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._keep, name="chain-lease", daemon=True)

    def refresh(self) -> bool:
        client = _redis()
        try:
            if client.get(_chain_key()) != self._chain:
                return False
            client.expire(_chain_key(), _lease_seconds())
            return True
        finally:
            client.close()

    def _keep(self) -> None:
        while not self._done.wait(_lease_seconds() / 4):
            try:
                if not self.refresh():
                    return
            except redis.RedisError as exc:
                log.info("chain lease not refreshed: %s", exc)

    def __enter__(self) -> _Lease:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join(timeout=10)


def _watch_chain(interval_s: float) -> None:
    """Open a new chain when none holds the lease: its holder died, or Redis restarted empty."""
    while True:
        time.sleep(interval_s)
        try:
            client = _redis()
            try:
                missing = client.get(_chain_key()) is None
            finally:
                client.close()
            if missing and start_loop(only_if_none=True):
                log.warning("training loop lost (its worker died, or Redis restarted): started a new one")
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
def train_round(chain: str, seq: int = 0) -> RoundReport:
    from worker.training.online import seconds_until_next

    settings = get_settings()
    lease = _Lease(chain)
    if not lease.refresh():
        return {"status": "superseded"}
    if not claim_round(chain, seq):
        return {"status": "duplicate"}
    with lease:
        report = _run_round(settings)
    train_round.apply_async((chain, seq + 1), countdown=seconds_until_next(report, settings))
    return report


def _run_round(settings: Settings) -> RoundReport:
    global _trainer
    report: RoundReport = {"status": "idle"}
    from worker.engine.llama import UnsupportedModelError

    global _unsupported
    if _unsupported is not None:  # decided once; the chain idles instead of failing every round
        return {"status": "unsupported", "error": _unsupported}
    try:
        if _trainer is None:
            from worker.training.control import HttpControlPlane
            from worker.training.online import build_trainer

            control = HttpControlPlane(settings)
            paused, _ = control.learning_state()
            if paused:
                report = {"status": "paused"}
            else:
                _trainer = build_trainer(settings, control)
        if _trainer is not None:
            report = _trainer.run_round()
            release_free_memory()  # a round's examples are gone: give their pages back
    except UnsupportedModelError as exc:
        log.error(
            "the draft cannot be trained for %s (%s): learning stops on this worker; serving goes on",
            settings.resolved_model_path,
            exc,
        )
        _unsupported = str(exc)[:500]
        report = {"status": "unsupported", "error": _unsupported}
    except Exception as exc:  # a failed round must not end the loop
        log.exception("training round failed")
        report = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
    return report
