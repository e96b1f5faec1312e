"""Builds the training workers' Celery application from settings (clients and workers share it).

Run workers with the solo pool (``borealis worker train`` does): prefork children inherit torch
state from the parent and deadlock in its thread pools.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_init

from borealis.settings import Settings, get_settings
from worker.training.broker import TRANSPORT


def create_celery(settings: Settings) -> Celery:
    if not settings.redis_url:
        raise RuntimeError("BOREALIS_REDIS_URL is not set (`borealis up` sets it for its children)")
    app = Celery(
        "borealis", broker=settings.redis_url, backend=settings.redis_url, include=["worker.training.tasks"]
    )
    prefix = f"{settings.redis_key_prefix}:celery:"
    app.conf.update(
        # Redelivery of an unacked round only after a day: a dead worker's chain is taken over through
        # its lapsed lease within minutes (tasks.py), and a long round is never handed out twice.
        broker_transport_options={"global_keyprefix": prefix, "visibility_timeout": 86_400},
        result_backend_transport_options={"global_keyprefix": prefix},
        task_acks_late=True,  # a task killed mid-way is redelivered, not lost
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        result_expires=3600,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # Redis down for long: keep trying, serving is unaffected
        broker_transport=TRANSPORT,  # survives losing Redis with a task unacknowledged
        # A round running when Redis goes finishes on its own terms (it handles Redis errors); the
        # chain watchdog, not Celery's redelivery, restarts learning.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_default_queue=f"{settings.redis_key_prefix}.training",
    )
    return app


@worker_init.connect
def _configure_process(**_: Any) -> None:
    """Native memory and threads, before the first round loads a model."""
    import torch

    from worker.native_memory import configure_native_memory

    settings = get_settings()
    configure_native_memory(settings, settings.trainer_kernel_cache_capacity)
    torch.set_num_threads(settings.resolved_trainer_threads)
