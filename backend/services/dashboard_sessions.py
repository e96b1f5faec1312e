"""Signed dashboard sessions and their CSRF tokens.

The cookie carries a session id, the admin credential it was opened with, and an expiry, signed
with a key kept owner-only under the appliance home: it survives a control-plane restart, needs
no table, and dies with its credential (rotation revokes every session). Sign-out revokes the
session id in this process until it would have expired anyway.

CSRF: a synchronizer token derived from the session id with the same key. Pages read it from
``GET /api/session`` and send it as ``X-CSRF-Token``; a cross-site page can neither read it nor
(SameSite=Strict) ride the cookie.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass

COOKIE_NAME = "borealis_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class SessionClaims:
    session_id: str
    credential_id: int
    expires_at: float


class DashboardSessions:
    def __init__(self, key: str, ttl_seconds: float = 8 * 3600) -> None:
        self._key = hashlib.sha256(b"borealis-dashboard-session:" + key.encode()).digest()
        self.ttl_seconds = ttl_seconds
        self._revoked: dict[str, float] = {}
        self._lock = threading.Lock()

    def _mac(self, purpose: bytes, payload: bytes) -> bytes:
        return hmac.new(self._key, purpose + b":" + payload, hashlib.sha256).digest()

    def issue(self, credential_id: int) -> tuple[str, SessionClaims]:
        """A new cookie value and its claims."""
        claims = SessionClaims(secrets.token_urlsafe(24), credential_id, time.time() + self.ttl_seconds)
        payload = json.dumps(
            {"sid": claims.session_id, "cid": claims.credential_id, "exp": claims.expires_at},
            separators=(",", ":"),
        ).encode()
        return f"{_b64(payload)}.{_b64(self._mac(b'session', payload))}", claims

    def verify(self, cookie: str | None) -> SessionClaims | None:
        """The claims of a well-signed, unexpired, unrevoked cookie; None otherwise."""
        if not cookie or len(cookie) > 1024 or cookie.count(".") != 1:
            return None
        encoded, signature = cookie.split(".")
        try:
            payload, mac = _unb64(encoded), _unb64(signature)
        except ValueError:
            return None
        if not hmac.compare_digest(mac, self._mac(b"session", payload)):
            return None
        body = json.loads(payload)
        claims = SessionClaims(str(body["sid"]), int(body["cid"]), float(body["exp"]))
        if claims.expires_at <= time.time():
            return None
        with self._lock:
            if claims.session_id in self._revoked:
                return None
        return claims

    def csrf_token(self, claims: SessionClaims) -> str:
        return _b64(self._mac(b"csrf", claims.session_id.encode()))

    def csrf_valid(self, claims: SessionClaims, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), self.csrf_token(claims).encode())

    def revoke(self, claims: SessionClaims) -> None:
        now = time.time()
        with self._lock:
            self._revoked = {sid: exp for sid, exp in self._revoked.items() if exp > now}
            self._revoked[claims.session_id] = claims.expires_at
