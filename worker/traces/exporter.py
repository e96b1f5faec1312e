"""The inference worker's side of the trace bus: hand a record over and get back to serving.

``export`` only serializes and appends to a bounded in-memory queue; a background thread ships
batches to the Redis Stream. When Redis is slow or down the queue fills and the oldest records are
dropped (the trainer prefers fresh traffic), failed batches are dropped too, every drop is
counted, and the thread backs off and reconnects by itself. Serving never waits on Redis.

A record may come with its target features (:mod:`worker.traces.features`): the blob is written
under its own key with a TTL in the same round trip, just before the record, and the record names
that key only when the worker's feature budget admitted it.
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
from worker.traces.features import FeatureBudget, FeatureWriteStats

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
    features: FeatureWriteStats = dataclasses.field(default_factory=FeatureWriteStats)

    @property
    def dropped(self) -> int:
        return self.dropped_oversized + self.dropped_queue_full + self.dropped_redis + self.dropped_closed


def export_client(url: str) -> redis.Redis:
    """Short timeouts and no client-side retries: the exporter's own backoff decides when to try again."""
    return redis.Redis.from_url(
        url, socket_connect_timeout=0.5, socket_timeout=1.0, retry=Retry(NoBackoff(), 0)
    )


@dataclass(frozen=True)
class _Entry:
    payload: bytes
    features_key: str | None = None
    features: bytes | None = None

    @property
    def queued_bytes(self) -> int:
        return len(self.payload)  # feature blobs are bounded by the feature budget instead


class TraceExporter:
    def __init__(self, config: TraceBusConfig) -> None:
        self._config = config
        self._client = export_client(config.redis_url)
        self._features = FeatureBudget(config.features_max_bytes, config.features_ttl_s)
        self._queue: deque[_Entry] = deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._stats = ExportStats()
        self._mean_bytes: float | None = None
        self._thread = threading.Thread(target=self._run, name="trace-export", daemon=True)
        self._thread.start()

    def export(self, record: TraceRecord, features: bytes | None = None) -> bool:
        """Queue a record (and its feature blob) for Redis; False when the record was dropped at once."""
        with self._cond:
            if self._stop.is_set():
                self._stats.dropped_closed += 1
                return False
            key = None
            if features is not None and self._config.record_features:
                if self._features.admit(len(features)):
                    key = f"{self._config.features_key_prefix}{record.request_id}"
                    record = record.model_copy(update={"features_key": key})
                else:
                    self._stats.features.dropped_budget += 1
            self._stats.features.window_bytes = self._features.bytes
        payload = encode(record)
        entry = _Entry(payload, key, features if key else None)
        with self._cond:
            if len(payload) > self._config.max_record_bytes:
                self._stats.dropped_oversized += 1
                return False
            self._queue.append(entry)
            self._stats.queued_bytes += entry.queued_bytes
            while (
                len(self._queue) > self._config.export_queue_size
                or self._stats.queued_bytes > self._config.export_queue_bytes
            ):
                self._stats.queued_bytes -= self._queue.popleft().queued_bytes
                self._stats.dropped_queue_full += 1
            self._stats.queued = len(self._queue)
            self._cond.notify()
        return True

    def stats(self) -> ExportStats:
        with self._cond:
            return dataclasses.replace(self._stats, features=dataclasses.replace(self._stats.features))

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

    def _next_batch(self) -> list[_Entry] | None:
        with self._cond:
            while not self._queue and not self._stop.is_set():
                self._cond.wait()
            if not self._queue:
                return None
            batch = [self._queue.popleft() for _ in range(min(BATCH_SIZE, len(self._queue)))]
            self._stats.queued_bytes -= sum(entry.queued_bytes for entry in batch)
            self._stats.queued = len(self._queue)
            return batch

    def _send(self, batch: list[_Entry]) -> None:
        """One round trip; a refused feature write costs only the features, a refused record the batch."""
        pipe = self._client.pipeline(transaction=False)
        ttl = max(1, round(self._config.features_ttl_s))
        kinds = []
        for entry in batch:
            if entry.features_key is not None and entry.features is not None:
                pipe.set(entry.features_key, entry.features, ex=ttl)
                kinds.append("features")
            pipe.xadd(
                self._config.stream,
                {PAYLOAD_FIELD: entry.payload},
                maxlen=self._maxlen(len(entry.payload)),
                approximate=True,
            )
            kinds.append("record")
        results = list(zip(kinds, pipe.execute(raise_on_error=False), strict=True))
        record_errors = [r for k, r in results if k == "record" and isinstance(r, Exception)]
        feature_results = [r for k, r in results if k == "features"]
        with self._cond:
            failed = sum(isinstance(r, Exception) for r in feature_results)
            self._stats.features.failed += failed
            self._stats.features.stored += len(feature_results) - failed
        if record_errors:
            raise record_errors[0]

    def _maxlen(self, size: int) -> int:
        """MAXLEN that keeps the stream within its byte budget at the recent mean record size."""
        mean = self._mean_bytes
        self._mean_bytes = size if mean is None else mean + SIZE_EWMA_ALPHA * (size - mean)
        by_bytes = int(self._config.stream_max_bytes // self._mean_bytes)
        return max(1, min(self._config.stream_maxlen, by_bytes))

    def _failed(self, batch: list[_Entry], exc: Exception) -> None:
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
