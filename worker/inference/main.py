"""Entry point of one inference worker process: load the model, serve, heartbeat."""

from __future__ import annotations

import logging

import torch
import uvicorn

from borealis.settings import Settings
from borealis.wire import WorkerRegistration
from worker.engine.hf_plain import PlainHFEngine, load_hf_model
from worker.inference.heartbeat import HeartbeatLoop
from worker.inference.runner import EngineRunner
from worker.inference.server import WorkerState, create_worker_app
from worker.inference.tokenization import PromptBuilder

log = logging.getLogger(__name__)


def run_inference_worker(settings: Settings) -> None:
    torch.set_num_threads(settings.threads)
    model_dir = settings.resolved_model_path
    if not (model_dir / "config.json").is_file():
        raise SystemExit(f"no model at {model_dir}: run `borealis model prepare` or set BOREALIS_MODEL_PATH")
    model = load_hf_model(model_dir)
    context = min(
        int(getattr(model.config, "max_position_embeddings", 2048)),
        settings.max_prompt_tokens + settings.max_new_tokens_limit,
    )
    prompts = PromptBuilder.from_model_dir(model_dir, context)
    runner = EngineRunner(PlainHFEngine(model))
    state = WorkerState(settings.resolved_worker_id, settings.model_name, runner, prompts)

    def snapshot() -> WorkerRegistration:
        return WorkerRegistration(
            worker_id=state.worker_id,
            url=settings.resolved_worker_url,
            model=state.model_name,
            draft_version=state.draft_version,
            active_requests=runner.active_requests,
            max_context_tokens=context,
        )

    heartbeat = HeartbeatLoop(settings.resolved_control_plane_url, settings.heartbeat_seconds, snapshot)
    runner.start()
    heartbeat.start()
    log.info("inference worker %s serving %s on %s", state.worker_id, model_dir, settings.resolved_worker_url)
    try:
        uvicorn.run(
            create_worker_app(state),
            host=settings.worker_host,
            port=settings.worker_port,
            log_level="warning",
        )
    finally:
        heartbeat.stop()
        runner.stop()
