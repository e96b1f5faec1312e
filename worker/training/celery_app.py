"""The training workers' Celery application instance (``celery -A worker.training.celery_app``)."""

from __future__ import annotations

from borealis.settings import get_settings
from worker.training.celery_factory import create_celery

app = create_celery(get_settings())
