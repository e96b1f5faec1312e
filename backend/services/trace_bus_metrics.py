"""Trace-bus health for ``/metrics`` and the dashboard: stream depth, dead letters, worker drops.

Depth is read from Redis at scrape time; drops are what each inference worker reports on its
heartbeat (workers drop rather than block when Redis is slow or down).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from borealis.tracebus import TraceBusConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerTraceCounts:
    """What one worker's heartbeat says it exported and dropped, since it started."""

    exported: int
    dropped: int
    features_stored: int = 0
    features_dropped: int = 0


@dataclass(frozen=True)
class TraceBusSnapshot:
    stream_length: int | None  # None: Redis not reachable
    dead_letter_length: int | None
    exported: int
    dropped: int


class TraceBusMonitor(Collector):
    def __init__(self, config: TraceBusConfig) -> None:
        self._config = config
        self._client = (
            redis.Redis.from_url(config.redis_url, socket_timeout=1, socket_connect_timeout=1)
            if config.redis_url
            else None
        )
        self._lock = threading.Lock()
        self._reports: dict[str, WorkerTraceCounts] = {}

    def report(self, worker_id: str, counts: WorkerTraceCounts) -> None:
        with self._lock:
            self._reports[worker_id] = counts

    def _length(self, key: str) -> int | None:
        if self._client is None:
            return None
        try:
            return int(self._client.xlen(key))
        except redis.RedisError as exc:
            log.debug("trace bus depth unavailable: %s", exc)
            return None

    def snapshot(self) -> TraceBusSnapshot:
        with self._lock:
            reports = list(self._reports.values())
        return TraceBusSnapshot(
            stream_length=self._length(self._config.stream),
            dead_letter_length=self._length(self._config.dead_letter_stream),
            exported=sum(counts.exported for counts in reports),
            dropped=sum(counts.dropped for counts in reports),
        )

    def per_worker(self) -> dict[str, WorkerTraceCounts]:
        with self._lock:
            return dict(self._reports)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        snapshot = self.snapshot()
        for name, value, doc in (
            ("borealis:trace_stream_length", snapshot.stream_length, "Trace records waiting in the stream."),
            (
                "borealis:trace_dead_letter_length",
                snapshot.dead_letter_length,
                "Dead-lettered trace records.",
            ),
        ):
            if value is not None:
                yield GaugeMetricFamily(name, doc, value=value)
        families = {
            "exported": CounterMetricFamily(
                "borealis:traces_exported", "Trace records exported, by worker.", labels=["worker"]
            ),
            "dropped": CounterMetricFamily(
                "borealis:traces_dropped", "Trace records dropped, by worker.", labels=["worker"]
            ),
            "features_stored": CounterMetricFamily(
                "borealis:trace_features_stored",
                "Trace feature blobs written to the side store, by worker.",
                labels=["worker"],
            ),
            "features_dropped": CounterMetricFamily(
                "borealis:trace_features_dropped",
                "Trace feature blobs dropped (over the worker's budget or refused by Redis), by worker.",
                labels=["worker"],
            ),
        }
        for worker, counts in sorted(self.per_worker().items()):
            values = dataclasses.asdict(counts)
            for field, family in families.items():
                family.add_metric([worker], values[field])
        yield from families.values()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
