"""The admin credential: created at first start, stored owner-only, rotatable."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from backend.crud import credentials
from borealis.secrets import generate_token, read_or_create_token, write_private
from borealis.settings import Settings

log = logging.getLogger(__name__)


def ensure_admin_credential(session: Session, settings: Settings) -> None:
    """Install the configured admin token, or generate one into ``home/admin-token`` on first start."""
    if settings.admin_token:
        if credentials.find_active(session, credentials.ADMIN, settings.admin_token) is None:
            credentials.add(session, credentials.ADMIN, "configured", settings.admin_token)
        return
    if credentials.active(session, credentials.ADMIN):
        return
    token = read_or_create_token(settings.admin_token_file, "adm")
    credentials.add(session, credentials.ADMIN, "generated", token)
    log.info("admin credential generated; it is in %s (owner-only)", settings.admin_token_file)


def rotate_admin_credential(session: Session, settings: Settings) -> str:
    """Revoke every admin credential and issue a new one (written to ``home/admin-token``)."""
    credentials.revoke_all(session, credentials.ADMIN)
    token = generate_token("adm")
    credentials.add(session, credentials.ADMIN, "rotated", token)
    write_private(settings.admin_token_file, token)
    return token
