"""Shared fixtures: real Redis, real databases (SQLite always, PostgreSQL when configured), models.

CI points ``BOREALIS_TEST_REDIS_URL`` and ``BOREALIS_TEST_POSTGRES_URL`` at the machine's servers;
on a fresh machine Redis is embedded and the PostgreSQL tests are skipped. Every run uses its own
Redis key prefix and its own PostgreSQL database, and removes both afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from borealis.embedded_redis import start_embedded_redis
from borealis.settings import Settings
from tests.procs import free_port

REDIS_PASSWORD = "test-" + "redis-password"  # the embedded server always requires one

RUN_ID = uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get("BOREALIS_TEST_REDIS_URL")
    if configured:
        yield configured
        return
    port = free_port()
    home = tmp_path_factory.mktemp("redis")
    process = start_embedded_redis(home, port, home / "redis.log", REDIS_PASSWORD)
    yield f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0"
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="session")
def key_prefix(redis_url: str) -> Iterator[str]:
    prefix = f"borealis-test-{RUN_ID}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"{prefix}*", count=500):
        client.delete(key)


@pytest.fixture(scope="session")
def postgres_admin_url() -> str | None:
    return os.environ.get("BOREALIS_TEST_POSTGRES_URL")


@pytest.fixture
def postgres_url(postgres_admin_url: str | None) -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    if not postgres_admin_url:
        pytest.skip("BOREALIS_TEST_POSTGRES_URL is not set")
    name = f"borealis_test_{RUN_ID}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(postgres_admin_url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'borealis.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The embedded model, prepared once (idempotent; reuses the user's cache)."""
    from worker.model_prep import prepare_embedded_model

    return prepare_embedded_model(Settings().embedded_model_dir)


def save_tiny_llama(out: Path, tokenizer_dir: Path, **overrides: Any) -> Path:
    """A random-weight 2-layer Llama with SmolLM2's tokenizer, saved as an HF directory."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        **overrides,
    )
    LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Path:
    """Real forward passes, fast."""
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), smollm2_dir)


@pytest.fixture
def base_env(tmp_path: Path, redis_url: str, key_prefix: str) -> dict[str, str]:
    """Environment for child processes: isolated home, shared real Redis with this run's prefix."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOREALIS_")}
    env.update(
        {
            "BOREALIS_HOME": str(tmp_path / "home"),
            "BOREALIS_REDIS_URL": redis_url,
            "BOREALIS_REDIS_KEY_PREFIX": f"{key_prefix}-{uuid.uuid4().hex[:6]}",
            "BOREALIS_THREADS": "1",
        }
    )
    return env
