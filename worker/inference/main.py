"""Entry point of one inference worker process: load the model, serve, heartbeat, hot-swap drafts."""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

import torch
import uvicorn

from borealis.control_client import ControlPlaneClient
from borealis.processes import rss_kib
from borealis.secrets import resolve_cluster_token
from borealis.settings import Settings
from borealis.tracebus import TraceBusConfig
from borealis.wire import HeartbeatReply, SwapCommand, WorkerRegistration, swap_channel
from worker.inference.engine_factory import ServingEngine, build_engine
from worker.inference.heartbeat import HeartbeatLoop
from worker.inference.runner import EngineRunner
from worker.inference.server import WorkerState, create_worker_app
from worker.inference.swap import SwapListener, build_swapper
from worker.inference.tokenization import PromptBuilder
from worker.inference.trace_export import TraceSink
from worker.native_memory import configure_native_memory
from worker.traces.exporter import TraceExporter

log = logging.getLogger(__name__)


def listening_socket(host: str, port: int) -> socket.socket:
    """The worker's port, bound and listening before its first heartbeat.

    The control plane routes to a worker as soon as it registers; a request sent before uvicorn had
    bound the port was refused (a 503 to the user). Connections made now wait in the backlog instead.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=2048)


def run_inference_worker(settings: Settings) -> None:
    configure_native_memory(settings, settings.kernel_cache_capacity)
    model_dir = settings.resolved_model_path
    if not (model_dir / "config.json").is_file():
        raise SystemExit(f"no model at {model_dir}: run `borealis model prepare` or set BOREALIS_MODEL_PATH")
    sock = listening_socket(settings.worker_host, settings.worker_port)  # a taken port fails before the load

    def build() -> ServingEngine[Any]:
        torch.set_num_threads(settings.threads)  # on the engine thread, like every torch op (see runner)
        return build_engine(settings.serving, model_dir, settings.home)

    runner = EngineRunner()
    serving = runner.start(build, lambda built: built.engine)
    prompts = PromptBuilder.from_model_dir(model_dir, serving.max_context_tokens)
    token = resolve_cluster_token(settings.security)
    control = ControlPlaneClient(
        settings.resolved_control_plane_url, token, timeout_s=max(5.0, 2 * settings.heartbeat_seconds)
    )
    state = WorkerState(
        settings.resolved_worker_id,
        settings.model_name,
        runner,
        prompts,
        cluster_token=token,
        max_requests=settings.max_batch + settings.worker_max_queued,
        stream_interval_seconds=settings.stream_interval_ms / 1000,
    )
    swapper = build_swapper(settings, state, runner, serving, control)
    exporter = TraceExporter(TraceBusConfig.from_settings(settings)) if settings.redis_url else None
    if exporter is not None:
        state.traces = TraceSink(exporter, state.worker_id, state.model_name)

    def snapshot() -> WorkerRegistration:
        return WorkerRegistration(
            worker_id=state.worker_id,
            url=settings.resolved_worker_url,
            model=state.model_name,
            draft_version=swapper.current if swapper else None,
            active_requests=runner.active_requests,
            waiting_requests=max(0, runner.active_requests - settings.max_batch),
            max_context_tokens=serving.max_context_tokens,
            traces_exported=state.traces.exported if state.traces else 0,
            traces_dropped=state.traces.dropped if state.traces else 0,
            trace_features_stored=state.traces.features_stored if state.traces else 0,
            trace_features_dropped=state.traces.features_dropped if state.traces else 0,
            rss_bytes=1024 * (rss_kib() or 0),
            cpu_seconds=time.process_time(),
            engine=serving.kind,
            fallback_reason=serving.fallback_reason,
        )

    def on_reply(reply: HeartbeatReply) -> None:
        if state.traces is not None:
            state.traces.paused_drop = reply.learning_paused and settings.trace_when_paused == "drop"
        if swapper is not None:
            swapper.request(reply.desired_draft_version)

    heartbeat = HeartbeatLoop(control, settings.heartbeat_seconds, snapshot, on_reply)
    listener = None
    if swapper is not None and settings.redis_url:

        def on_command(_: SwapCommand) -> None:
            heartbeat.wake()  # the heartbeat reply, not the command, names the version to serve

        listener = SwapListener(settings.redis_url, swap_channel(settings.redis_key_prefix), on_command)
        listener.start()
    heartbeat.start()
    log.info("inference worker %s serving %s on %s", state.worker_id, model_dir, settings.resolved_worker_url)
    try:
        server = uvicorn.Server(uvicorn.Config(create_worker_app(state), log_level="warning"))
        server.run(sockets=[sock])
    finally:
        sock.close()
        heartbeat.stop()
        control.close()
        if listener is not None:
            listener.stop()
        runner.stop()
        if serving.close is not None:
            serving.close()
        if exporter is not None:
            exporter.close()
