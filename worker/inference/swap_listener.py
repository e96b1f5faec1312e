"""Listens for swap commands on Redis pub/sub (the fast path; heartbeats reconcile the rest)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import redis
from pydantic import ValidationError

from borealis.wire import SwapCommand

log = logging.getLogger(__name__)


class SwapListener:
    def __init__(self, redis_url: str, channel: str, on_command: Callable[[SwapCommand], None]) -> None:
        self._redis_url = redis_url
        self._channel = channel
        self._on_command = on_command
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="swap-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _handle(self, data: bytes) -> None:
        try:
            command = SwapCommand.model_validate_json(data)
        except ValidationError as exc:
            log.warning("ignoring a malformed swap command: %s", exc.errors()[:1])
            return
        self._on_command(command)

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                client = redis.Redis.from_url(self._redis_url, socket_connect_timeout=2, socket_timeout=5)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self._channel)
                backoff = 0.5
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message and isinstance(message.get("data"), bytes):
                        self._handle(message["data"])
                pubsub.close()
                client.close()
            except redis.RedisError as exc:
                log.warning("swap listener lost Redis (%s); retrying in %.1f s", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
