"""Tasks of the training worker.

Training rounds arrive with the flywheel issue; for now the worker answers ``describe``, which
tells the control plane (and tests) that a trainer is up and what it runs with.
"""

from __future__ import annotations

import platform

from borealis.settings import get_settings
from worker.training.celery_app import app


@app.task(name="borealis.training.describe")
def describe() -> dict[str, object]:
    import torch

    settings = get_settings()
    return {
        "host": platform.node(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "model_path": str(settings.resolved_model_path),
        "model_ready": (settings.resolved_model_path / "config.json").is_file(),
    }
