"""The inference worker's side of the trace bus: hand a record over and get back to serving.

``export`` only serializes and appends to a bounded in-memory queue; a background thread ships
batches to the Redis Stream. When Redis is slow or down the queue fills and the oldest records are
dropped (the trainer prefers fresh traffic), failed batches are dropped too, every drop is
counted, and the thread backs off and reconnects by itself. Serving never waits on Redis.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import deque
from dataclasses import dataclass

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from borealis.tracebus import TraceBusConfig
from borealis.wire import TraceRecord
from worker.traces.codec import PAYLOAD_FIELD, encode

log = logging.getLogger(__name__)

BATCH_SIZE = 64
MIN_BACKOFF_S = 0.1
MAX_BACKOFF_S = 5.0
SIZE_EWMA_ALPHA = 0.02


@dataclass
class ExportStats:
    exported: int = 0
    dropped_oversized: int = 0
    dropped_queue_full: int = 0
    dropped_redis: int = 0  # in a batch that Redis refused or never answered
    dropped_closed: int = 0  # exported after close()
    redis_errors: int = 0
    queued: int = 0
    queued_bytes: int = 0
    connected: bool = False

    @property
    def dropped(self) -> int:
        return self.dropped_oversized + self.dropped_queue_full + self.dropped_redis + self.dropped_closed


def export_client(url: str) -> redis.Redis:
    """Short timeouts and no client-side retries: the exporter's own backoff decides when to try again."""
    return redis.Redis.from_url(
        url, socket_connect_timeout=0.5, socket_timeout=1.0, retry=Retry(NoBackoff(), 0)
    )


class TraceExporter:
    def __init__(self, config: TraceBusConfig) -> None:
        self._config = config
        self._client = export_client(config.redis_url)
        self._queue: deque[bytes] = deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._stats = ExportStats()
        self._mean_bytes: float | None = None
        self._thread = threading.Thread(target=self._run, name="trace-export", daemon=True)
        self._thread.start()

    def export(self, record: TraceRecord) -> bool:
        """Queue a record for the stream; False when it was dropped at once (too large, or closed)."""
        payload = encode(record)
        with self._cond:
            if self._stop.is_set():
                self._stats.dropped_closed += 1
                return False
            if len(payload) > self._config.max_record_bytes:
                self._stats.dropped_oversized += 1
                return False
            self._queue.append(payload)
            self._stats.queued_bytes += len(payload)
            while (
                len(self._queue) > self._config.export_queue_size
                or self._stats.queued_bytes > self._config.export_queue_bytes
            ):
                self._stats.queued_bytes -= len(self._queue.popleft())
                self._stats.dropped_queue_full += 1
            self._stats.queued = len(self._queue)
            self._cond.notify()
        return True

    def stats(self) -> ExportStats:
        with self._cond:
            return dataclasses.replace(self._stats)

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush what Redis accepts within ``timeout_s``; the rest is dropped with the process."""
        with self._cond:
            self._stop.set()
            self._cond.notify()
        self._thread.join(timeout=timeout_s)
        if not self._thread.is_alive():  # else it is stuck in a socket read that times out by itself
            self._client.close()

    def _run(self) -> None:
        backoff = MIN_BACKOFF_S
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._send(batch)
            except Exception as exc:  # any failure costs this batch, never the exporter thread
                self._failed(batch, exc)
                if self._stop.wait(backoff):
                    self._drop_queue()
                    return
                backoff = min(backoff * 2, MAX_BACKOFF_S)
            else:
                with self._cond:
                    self._stats.exported += len(batch)
                    self._stats.connected = True
                backoff = MIN_BACKOFF_S

    def _next_batch(self) -> list[bytes] | None:
        with self._cond:
            while not self._queue and not self._stop.is_set():
                self._cond.wait()
            if not self._queue:
                return None
            batch = [self._queue.popleft() for _ in range(min(BATCH_SIZE, len(self._queue)))]
            self._stats.queued_bytes -= sum(len(payload) for payload in batch)
            self._stats.queued = len(self._queue)
            return batch

    def _send(self, batch: list[bytes]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for payload in batch:
            pipe.xadd(
                self._config.stream,
                {PAYLOAD_FIELD: payload},
                maxlen=self._maxlen(len(payload)),
                approximate=True,
            )
        pipe.execute()

    def _maxlen(self, size: int) -> int:
        """MAXLEN that keeps the stream within its byte budget at the recent mean record size."""
        mean = self._mean_bytes
        self._mean_bytes = size if mean is None else mean + SIZE_EWMA_ALPHA * (size - mean)
        by_bytes = int(self._config.stream_max_bytes // self._mean_bytes)
        return max(1, min(self._config.stream_maxlen, by_bytes))

    def _failed(self, batch: list[bytes], exc: Exception) -> None:
        with self._cond:
            if self._stats.connected or self._stats.redis_errors == 0:
                log.warning("trace export to Redis failed, dropping traces until it recovers: %s", exc)
            self._stats.dropped_redis += len(batch)
            self._stats.redis_errors += 1
            self._stats.connected = False

    def _drop_queue(self) -> None:
        with self._cond:
            self._stats.dropped_redis += len(self._queue)
            self._queue.clear()
            self._stats.queued = 0
            self._stats.queued_bytes = 0
