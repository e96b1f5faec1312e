"""A training round runs once per (chain, seq), however often Celery delivers it (real Redis)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from borealis.settings import get_settings


@pytest.fixture
def prefixed(monkeypatch: pytest.MonkeyPatch, redis_url: str, key_prefix: str) -> Iterator[str]:
    prefix = f"{key_prefix}-tokens-{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("BOREALIS_REDIS_URL", redis_url)
    monkeypatch.setenv("BOREALIS_REDIS_KEY_PREFIX", prefix)
    get_settings.cache_clear()
    yield prefix
    get_settings.cache_clear()
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)
    client.close()


def test_a_redelivered_round_is_a_no_op(prefixed: str) -> None:
    from worker.training.tasks import claim_round

    chain = uuid.uuid4().hex
    assert claim_round(chain, 0) is True
    assert claim_round(chain, 0) is False  # the same task delivered again
    assert claim_round(chain, 1) is True  # the next round of the chain
    assert claim_round(uuid.uuid4().hex, 0) is True  # another chain has its own tokens
