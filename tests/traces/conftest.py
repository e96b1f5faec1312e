"""A private set of trace-bus keys per test under this run's prefix, deleted afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from borealis.settings import Settings
from borealis.tracebus import TraceBusConfig


@pytest.fixture
def bus(redis_url: str, key_prefix: str) -> Iterator[TraceBusConfig]:
    prefix = f"{key_prefix}-traces-{uuid.uuid4().hex[:8]}"
    yield TraceBusConfig.from_settings(Settings(redis_url=redis_url, redis_key_prefix=prefix))
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"{prefix}*", count=500):
        client.delete(key)
    client.close()


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()
