"""Dashboard sign-in and sign-out with the admin credential (see services/dashboard_sessions.py)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response

from backend.api.deps import AdminDep, DashboardSessionsDep, SessionDep, signed_in
from backend.api.errors import APIError
from backend.crud import audit, credentials
from backend.schemas.session import SessionView, SignIn
from backend.services.dashboard_sessions import COOKIE_NAME, DashboardSessions, SessionClaims

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/session", tags=["session"])


def _view(sessions: DashboardSessions, claims: SessionClaims, name: str) -> SessionView:
    return SessionView(
        actor=f"admin:{name}:dashboard",
        expires_at=datetime.fromtimestamp(claims.expires_at, UTC),
        csrf_token=sessions.csrf_token(claims),
    )


@router.post("", response_model=SessionView)
def sign_in(
    body: SignIn, request: Request, response: Response, session: SessionDep, sessions: DashboardSessionsDep
) -> SessionView:
    """Open a dashboard session: an HttpOnly, SameSite=Strict cookie; refused for a wrong credential."""
    credential = credentials.find_active(session, credentials.ADMIN, body.token)
    if credential is None:
        log.warning("dashboard sign-in refused from %s", request.client.host if request.client else "?")
        raise APIError(403, "invalid admin credential", type_="permission_error")
    cookie, claims = sessions.issue(credential.id)
    response.set_cookie(
        COOKIE_NAME,
        cookie,
        max_age=int(sessions.ttl_seconds),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    response.headers["cache-control"] = "no-store"
    audit.record(session, f"admin:{credential.name}:dashboard", "session.sign_in", "dashboard")
    return _view(sessions, claims, credential.name)


@router.get("", response_model=SessionView)
def current(
    request: Request, response: Response, session: SessionDep, sessions: DashboardSessionsDep
) -> SessionView:
    """The signed-in session and its CSRF token (401 when not signed in)."""
    found = signed_in(request, session, sessions)
    if found is None:
        raise APIError(401, "not signed in", type_="authentication_error")
    response.headers["cache-control"] = "no-store"
    return _view(sessions, found[0], found[1].name)


@router.delete("", status_code=204)
def sign_out(
    request: Request, session: SessionDep, sessions: DashboardSessionsDep, actor: AdminDep
) -> Response:
    """End the session (needs its CSRF token, like every action)."""
    found = signed_in(request, session, sessions)
    if found is not None:
        sessions.revoke(found[0])
        audit.record(session, actor, "session.sign_out", "dashboard")
    response = Response(status_code=204)
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict")
    return response
