"""Control-plane application factory: migrations at start, routes, shared clients."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from backend.api.errors import install_error_handlers
from backend.api.routes import health, internal, openai, workers
from backend.db.migrate import upgrade
from backend.db.session import make_engine, make_session_factory
from backend.services.inference import InferenceRouter
from borealis.settings import Settings, get_settings
from dashboard.routes import router as dashboard_router

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
        timeout = httpx.Timeout(settings.request_timeout_seconds, connect=5.0)
        async with httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=512)) as client:
            app.state.inference_router = InferenceRouter(
                app.state.sessions, client, settings.worker_stale_seconds
            )
            yield
        engine.dispose()

    app = FastAPI(title="Borealis control plane", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    install_error_handlers(app)
    for module in (health, openai, internal, workers):
        app.include_router(module.router)
    app.include_router(dashboard_router)
    return app
