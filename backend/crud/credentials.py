"""Admin credentials and inference API keys (sha256 only in the database)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.db.models import Credential, utcnow
from borealis.secrets import token_sha256

ADMIN = "admin"
API_KEY = "api_key"


def active(session: Session, kind: str) -> list[Credential]:
    query = select(Credential).where(Credential.kind == kind, Credential.revoked_at.is_(None))
    return list(session.scalars(query))


def find_active(session: Session, kind: str, token: str) -> Credential | None:
    query = select(Credential).where(
        Credential.kind == kind,
        Credential.token_sha256 == token_sha256(token),
        Credential.revoked_at.is_(None),
    )
    return session.scalars(query).first()


def add(session: Session, kind: str, name: str, token: str) -> Credential:
    credential = Credential(kind=kind, name=name, token_sha256=token_sha256(token))
    session.add(credential)
    session.commit()
    return credential


def revoke_all(session: Session, kind: str) -> int:
    revoked = active(session, kind)
    for credential in revoked:
        credential.revoked_at = utcnow()
    session.commit()
    return len(revoked)
