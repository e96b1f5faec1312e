"""Swap commands to inference workers over Redis pub/sub.

Pub/sub is the fast path only: the desired version is stored in the database and returned on
every heartbeat, so a worker that missed a command (Redis down, worker restarting) reconciles
anyway. Publishing therefore never fails an operator action.
"""

from __future__ import annotations

import logging
import uuid

import redis

from borealis.wire import SwapCommand, swap_channel

log = logging.getLogger(__name__)


class SwapPublisher:
    def __init__(self, redis_url: str, key_prefix: str) -> None:
        self._client = (
            redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2) if redis_url else None
        )
        self._channel = swap_channel(key_prefix)

    def publish(self, draft_version: str | None, reason: str) -> SwapCommand:
        """A wake-up for workers: their next heartbeat reply, not this message, names what to serve."""
        command = SwapCommand(command_id=uuid.uuid4().hex, draft_version=draft_version, reason=reason[:500])
        if self._client is None:
            return command
        try:
            self._client.publish(self._channel, command.model_dump_json())
        except redis.RedisError as exc:
            log.warning("swap command not published (workers will reconcile on heartbeat): %s", exc)
        return command

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
