"""Dashboard sessions in process: signatures, expiry, sign-out, CSRF binding, credential rotation."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from backend.app import create_app
from backend.services.credentials import rotate_admin_credential
from backend.services.dashboard_sessions import DashboardSessions
from borealis.settings import Settings

TOKEN = "adm_sessions_test"


def test_cookie_is_signed_expires_and_binds_its_csrf_token() -> None:
    sessions = DashboardSessions("key-a", ttl_seconds=60)
    cookie, claims = sessions.issue(7)
    assert sessions.verify(cookie) == claims
    payload, signature = cookie.split(".")
    assert sessions.verify(f"{payload}.{signature[:-2]}AA") is None
    assert DashboardSessions("key-b").verify(cookie) is None
    assert sessions.verify(None) is None and sessions.verify("garbage") is None
    other_cookie, other = sessions.issue(7)
    assert sessions.csrf_valid(claims, sessions.csrf_token(claims))
    assert not sessions.csrf_valid(claims, sessions.csrf_token(other))
    assert not sessions.csrf_valid(claims, None)
    sessions.revoke(claims)
    assert sessions.verify(cookie) is None and sessions.verify(other_cookie) == other
    expired = DashboardSessions("key-a", ttl_seconds=-1)
    assert expired.verify(expired.issue(7)[0]) is None


def test_rotating_the_admin_credential_ends_dashboard_sessions(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, admin_token=TOKEN, redis_url="")
    app = create_app(settings)
    with TestClient(app) as client:
        assert (
            client.get("/dashboard", follow_redirects=False)
            .headers["location"]
            .startswith("/dashboard/login")
        )
        signed = client.post("/api/session", json={"token": TOKEN})
        assert signed.status_code == 200
        csrf = {"x-csrf-token": signed.json()["csrf_token"]}
        page = client.get("/dashboard/drafts")
        assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
        assert client.post("/api/learning/pause", json={"reason": "r"}, headers=csrf).status_code == 200
        with app.state.sessions() as session:
            rotate_admin_credential(session, settings.security)
        assert client.get("/api/learning").status_code == 401
        assert client.get("/dashboard/drafts", follow_redirects=False).status_code == 303
