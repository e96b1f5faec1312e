"""FastAPI dependencies: settings, database sessions, services, and the kinds of caller auth."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from backend.api.errors import APIError
from backend.crud import credentials
from backend.db.models import Credential
from backend.services.artifacts import ArtifactStore
from backend.services.dashboard_sessions import (
    COOKIE_NAME,
    CSRF_HEADER,
    SAFE_METHODS,
    DashboardSessions,
    SessionClaims,
)
from backend.services.inference import InferenceRouter
from backend.services.metrics import ServingMetrics
from backend.services.observation import RequestObserver
from backend.services.registry import Registry
from backend.services.serving_stats import ServingStats
from backend.services.state_metrics import ControlPlaneState
from backend.services.swaps import SwapPublisher
from backend.services.trace_bus_metrics import TraceBusMonitor
from backend.services.trainer_progress import TrainerMonitor
from borealis.secrets import tokens_equal
from borealis.settings import Settings

bearer = HTTPBearer(auto_error=False)
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_db(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


def get_router(request: Request) -> InferenceRouter:
    router: InferenceRouter = request.app.state.inference_router
    return router


def get_observer(request: Request) -> RequestObserver:
    observer: RequestObserver = request.app.state.observer
    return observer


SettingsDep = Annotated[Settings, Depends(get_settings)]
ObserverDep = Annotated[RequestObserver, Depends(get_observer)]
SessionDep = Annotated[Session, Depends(get_db)]
RouterDep = Annotated[InferenceRouter, Depends(get_router)]


def get_publisher(request: Request) -> SwapPublisher:
    publisher: SwapPublisher = request.app.state.swap_publisher
    return publisher


def get_registry(
    session: SessionDep, publisher: Annotated[SwapPublisher, Depends(get_publisher)]
) -> Registry:
    return Registry(session, publisher)


def get_session_factory(request: Request) -> sessionmaker[Session]:
    factory: sessionmaker[Session] = request.app.state.sessions
    return factory


def get_artifacts(request: Request) -> ArtifactStore:
    store: ArtifactStore = request.app.state.artifacts
    return store


def get_trace_bus(request: Request) -> TraceBusMonitor:
    monitor: TraceBusMonitor = request.app.state.trace_bus
    return monitor


def get_trainers(request: Request) -> TrainerMonitor:
    monitor: TrainerMonitor = request.app.state.trainers
    return monitor


def get_serving_stats(request: Request) -> ServingStats:
    stats: ServingStats = request.app.state.serving_stats
    return stats


def get_state_metrics(request: Request) -> ControlPlaneState:
    state: ControlPlaneState = request.app.state.state_metrics
    return state


def get_metrics(request: Request) -> ServingMetrics:
    metrics: ServingMetrics = request.app.state.metrics
    return metrics


PublisherDep = Annotated[SwapPublisher, Depends(get_publisher)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
SessionFactoryDep = Annotated[sessionmaker[Session], Depends(get_session_factory)]
ArtifactsDep = Annotated[ArtifactStore, Depends(get_artifacts)]
TraceBusDep = Annotated[TraceBusMonitor, Depends(get_trace_bus)]
TrainersDep = Annotated[TrainerMonitor, Depends(get_trainers)]
ServingStatsDep = Annotated[ServingStats, Depends(get_serving_stats)]
MetricsDep = Annotated[ServingMetrics, Depends(get_metrics)]
StateMetricsDep = Annotated[ControlPlaneState, Depends(get_state_metrics)]


def get_dashboard_sessions(request: Request) -> DashboardSessions:
    sessions: DashboardSessions = request.app.state.dashboard_sessions
    return sessions


DashboardSessionsDep = Annotated[DashboardSessions, Depends(get_dashboard_sessions)]


def signed_in(
    request: Request, session: Session, sessions: DashboardSessions
) -> tuple[SessionClaims, Credential] | None:
    """The dashboard session of this request, if its cookie is valid and its credential still active."""
    claims = sessions.verify(request.cookies.get(COOKIE_NAME))
    if claims is None:
        return None
    credential = session.get(Credential, claims.credential_id)
    if credential is None or credential.kind != credentials.ADMIN or credential.revoked_at is not None:
        return None
    return claims, credential


def require_admin(
    request: Request, auth: BearerDep, session: SessionDep, sessions: DashboardSessionsDep
) -> str:
    """Operator endpoints: an admin bearer token, or a dashboard session whose state-changing
    requests carry its CSRF token. Returns the actor name for the audit log."""
    if auth is not None:
        credential = credentials.find_active(session, credentials.ADMIN, auth.credentials)
        if credential is None:
            raise APIError(403, "invalid admin credential", type_="permission_error")
        return f"admin:{credential.name}"
    found = signed_in(request, session, sessions)
    if found is None:
        raise APIError(
            401,
            "admin credential required (Authorization: Bearer <token>, or sign in to the dashboard)",
            type_="authentication_error",
        )
    claims, credential = found
    if request.method not in SAFE_METHODS and not sessions.csrf_valid(
        claims, request.headers.get(CSRF_HEADER)
    ):
        raise APIError(403, "missing or invalid CSRF token", type_="permission_error", code="csrf")
    return f"admin:{credential.name}:dashboard"


def require_cluster(request: Request, auth: BearerDep) -> None:
    """Worker and trainer endpoints: the shared cluster token."""
    if auth is None or not tokens_equal(auth.credentials, request.app.state.cluster_token):
        raise APIError(401, "cluster token required", type_="authentication_error")


def require_api_key(auth: BearerDep, settings: SettingsDep, session: SessionDep) -> str:
    """Inference endpoints: an API key when the deployment requires one. Returns the caller's label
    for traces (``key-<id>`` of a valid key, else ``anonymous``), never the key itself."""
    credential = None
    if auth is not None:
        credential = credentials.find_active(session, credentials.API_KEY, auth.credentials)
    if credential is None and settings.security.require_api_key:
        raise APIError(
            401, "a valid API key is required", type_="authentication_error", code="invalid_api_key"
        )
    return f"key-{credential.id}" if credential is not None else "anonymous"


AdminDep = Annotated[str, Depends(require_admin)]
ClusterDep = Depends(require_cluster)
ApiKeyDep = Depends(require_api_key)
CallerDep = Annotated[str, Depends(require_api_key)]
