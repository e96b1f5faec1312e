"""Control-plane application factory: migrations and credentials at start, routes, shared clients."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from backend.api.body_limit import BodySizeLimit
from backend.api.errors import install_error_handlers
from backend.api.routes import (
    control,
    dashboard_pages,
    drafts,
    health,
    internal,
    metrics,
    openai,
    session,
    stats,
    trainers,
    workers,
)
from backend.db.migrate import upgrade
from backend.db.session import make_engine, make_session_factory
from backend.services.artifacts import ArtifactStore
from backend.services.credentials import ensure_admin_credential
from backend.services.dashboard_sessions import DashboardSessions
from backend.services.inference import InferenceRouter
from backend.services.live_monitor import LiveMonitor
from backend.services.metrics import ServingMetrics
from backend.services.observation import RequestObserver
from backend.services.serving_stats import ServingStats
from backend.services.state_metrics import ControlPlaneState
from backend.services.swaps import SwapPublisher
from backend.services.trace_bus_metrics import TraceBusMonitor
from backend.services.trainer_progress import TrainerMonitor
from borealis.secrets import read_or_create_token, resolve_cluster_token
from borealis.settings import Settings, get_settings
from borealis.tracebus import TraceBusConfig

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, run_migrations: bool = True) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = settings.resolved_database_url
        if run_migrations:
            upgrade(url)
        engine = make_engine(url)
        app.state.sessions = make_session_factory(engine)
        with app.state.sessions() as session:
            ensure_admin_credential(session, settings.security)
        app.state.cluster_token = resolve_cluster_token(settings.security)
        app.state.dashboard_sessions = DashboardSessions(
            read_or_create_token(settings.security.session_key_file, "dsk")
        )
        app.state.artifacts = ArtifactStore(settings.resolved_artifact_dir)
        app.state.swap_publisher = SwapPublisher(settings.redis_url, settings.redis_key_prefix)
        monitor = LiveMonitor(app.state.sessions, app.state.swap_publisher, settings.rollback)
        app.state.observer = RequestObserver(app.state.metrics, monitor, app.state.serving_stats)
        app.state.trace_bus = TraceBusMonitor(TraceBusConfig.from_settings(settings))
        app.state.metrics.registry.register(app.state.trace_bus)
        app.state.state_metrics = ControlPlaneState(
            app.state.sessions, settings.worker_stale_seconds, settings.model_name
        )
        app.state.metrics.registry.register(app.state.state_metrics)
        app.state.trainers = TrainerMonitor()
        app.state.metrics.registry.register(app.state.trainers)
        # A short pool wait: past its limit the router answers 429 before a request could queue here.
        timeout = httpx.Timeout(settings.request_timeout_seconds, connect=5.0, pool=5.0)
        limits = httpx.Limits(max_connections=settings.max_in_flight + 16)
        async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
            app.state.inference_router = InferenceRouter(
                app.state.sessions,
                client,
                settings.worker_stale_seconds,
                app.state.cluster_token,
                settings.max_in_flight,
            )
            yield
        app.state.swap_publisher.close()
        app.state.metrics.registry.unregister(app.state.trace_bus)
        app.state.metrics.registry.unregister(app.state.state_metrics)
        app.state.metrics.registry.unregister(app.state.trainers)
        app.state.trace_bus.close()
        engine.dispose()

    app = FastAPI(title="Borealis control plane", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = ServingMetrics(settings.model_name)
    app.state.serving_stats = ServingStats()
    install_error_handlers(app)
    # Artifact uploads are cluster-authenticated and bounded by their registered size instead.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes, exempt_suffixes=("/artifact",))
    for module in (health, metrics, openai, internal, workers, trainers, drafts, control, session, stats):
        app.include_router(module.router)
    app.include_router(dashboard_pages.router)
    return app
