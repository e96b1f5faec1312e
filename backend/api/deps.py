"""FastAPI dependencies: settings, database sessions, the inference router."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from backend.services.inference import InferenceRouter
from borealis.settings import Settings


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_db(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


def get_router(request: Request) -> InferenceRouter:
    router: InferenceRouter = request.app.state.inference_router
    return router


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_db)]
RouterDep = Annotated[InferenceRouter, Depends(get_router)]
