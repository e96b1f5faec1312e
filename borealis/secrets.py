"""Tokens: generation, hashing, and owner-only token files (torch-free, used by every process)."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from borealis.settings import SecuritySettings


def generate_token(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def write_private(path: Path, content: str) -> None:
    """Write a secret readable by its owner only (created 0600, never world-readable in between)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content + "\n")
    os.replace(tmp, path)


def read_or_create_token(path: Path, prefix: str) -> str:
    """The token stored in ``path``, generating it on first use."""
    if path.is_file():
        token = path.read_text().strip()
        if token:
            return token
    token = generate_token(prefix)
    write_private(path, token)
    return token


def resolve_cluster_token(security: SecuritySettings) -> str:
    """The shared worker secret: configured (multi-machine) or the one in the shared home (one machine)."""
    return security.cluster_token or read_or_create_token(security.cluster_token_file, "cls")
