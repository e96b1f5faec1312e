"""Serving never waits on the trace bus: a dead or silent Redis costs dropped traces, not latency."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from borealis.embedded_redis import start_embedded_redis
from borealis.tracebus import TraceBusConfig
from tests.procs import free_port, wait_until
from tests.traces.helpers import make_record
from worker.traces.exporter import TraceExporter

REDIS_PASSWORD = "test-" + "redis-password"  # the embedded server always requires one

MAX_EXPORT_S = 0.01  # generous for a JSON dump and a deque append, tiny next to a decoding step


def _timed_exports(exporter: TraceExporter, count: int) -> float:
    """The slowest of ``count`` export calls, in seconds."""
    slowest = 0.0
    for i in range(count):
        started = time.perf_counter()
        exporter.export(make_record(f"req-{i}"))
        slowest = max(slowest, time.perf_counter() - started)
    return slowest


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A port that accepts connections and never answers: the worst kind of slow Redis."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"


def test_export_returns_at_once_and_counts_drops_when_redis_hangs(
    bus: TraceBusConfig, silent_server: str
) -> None:
    exporter = TraceExporter(dataclasses.replace(bus, redis_url=silent_server, export_queue_size=50))
    assert _timed_exports(exporter, 500) < MAX_EXPORT_S
    stats = exporter.stats()
    assert stats.exported == 0 and stats.queued <= 50
    assert stats.dropped_queue_full >= 450 - 64  # beyond the queue and one in-flight batch
    exporter.close(timeout_s=0.1)


def test_export_survives_redis_going_down_and_recovers(bus: TraceBusConfig, tmp_path: Path) -> None:
    port = free_port()
    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0"

    def start() -> subprocess.Popen[bytes]:
        return start_embedded_redis(tmp_path / "redis", port, tmp_path / "redis.log", REDIS_PASSWORD)

    server = start()
    exporter = TraceExporter(dataclasses.replace(bus, redis_url=url, export_queue_size=20))
    client = redis.Redis.from_url(url)
    try:
        exporter.export(make_record("before"))
        wait_until(lambda: exporter.stats().exported == 1, 5, "first export")

        server.terminate()
        server.wait(timeout=10)
        assert _timed_exports(exporter, 200) < MAX_EXPORT_S
        wait_until(lambda: not exporter.stats().connected, 5, "exporter to notice the outage")
        down = exporter.stats()
        assert down.dropped >= 180 and down.redis_errors >= 1

        server = start()  # a fresh, empty server on the same port
        exporter.export(make_record("after"))
        wait_until(lambda: exporter.stats().connected, 15, "reconnection")
        wait_until(lambda: exporter.stats().queued == 0, 5, "the queue to drain")
        entries: Any = client.xrange(bus.stream)
        payloads = [fields[b"record"] for _, fields in entries]
        assert b'"request_id":"after"' in payloads[-1]
        assert exporter.stats().exported == 1 + len(payloads)
    finally:
        exporter.close(timeout_s=1)
        client.close()
        server.terminate()
        server.wait(timeout=10)
