"""The admin credential: created at first start, stored owner-only, rotatable."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from backend.crud import credentials
from borealis.secrets import generate_token, read_or_create_token, write_private
from borealis.settings import SecuritySettings

log = logging.getLogger(__name__)


def ensure_admin_credential(session: Session, security: SecuritySettings) -> None:
    """Install the configured admin token, or generate one into ``home/admin-token`` on first start."""
    if security.admin_token:
        if credentials.find_active(session, credentials.ADMIN, security.admin_token) is None:
            credentials.add(session, credentials.ADMIN, "configured", security.admin_token)
        return
    if credentials.active(session, credentials.ADMIN):
        return
    token = read_or_create_token(security.admin_token_file, "adm")
    credentials.add(session, credentials.ADMIN, "generated", token)
    log.info("admin credential generated; it is in %s (owner-only)", security.admin_token_file)


def rotate_admin_credential(session: Session, security: SecuritySettings) -> str:
    """Revoke every admin credential and issue a new one (written to ``home/admin-token``)."""
    credentials.revoke_all(session, credentials.ADMIN)
    token = generate_token("adm")
    credentials.add(session, credentials.ADMIN, "rotated", token)
    write_private(security.admin_token_file, token)
    return token
