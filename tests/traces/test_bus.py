"""The trace bus on a real Redis: round trip, bounds, redelivery after a crash, dead letters."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from typing import Any

import redis

from borealis.tracebus import TraceBusConfig
from borealis.wire import TraceRecord
from tests.procs import wait_until
from tests.traces.helpers import make_record
from worker.traces.codec import PAYLOAD_FIELD, encode
from worker.traces.consumer import TraceConsumer
from worker.traces.exporter import TraceExporter


def _export_all(config: TraceBusConfig, records: list[TraceRecord]) -> TraceExporter:
    exporter = TraceExporter(config)
    for record in records:
        assert exporter.export(record)
    wait_until(lambda: exporter.stats().exported == len(records), 10, "traces exported")
    return exporter


def _read_all(consumer: TraceConsumer, expected: int, timeout_s: float = 5.0, count: int = 50) -> list[str]:
    ids: list[str] = []
    deadline = time.monotonic() + timeout_s
    while len(ids) < expected and time.monotonic() < deadline:
        ids += [delivery.entry_id for delivery in consumer.read(count=count, block_ms=100)]
    return ids


def _pending(client: redis.Redis, config: TraceBusConfig) -> int:
    return int(client.xpending(config.stream, config.group)["pending"])


def test_records_round_trip(bus: TraceBusConfig, client: redis.Redis) -> None:
    sent = [make_record(f"req-{i}", domain="prose" if i % 2 else "code") for i in range(21)]
    consumer = TraceConsumer(bus, "trainer-a")
    _export_all(bus, sent).close()
    deliveries = consumer.read(count=100, block_ms=1000)
    assert [d.record for d in deliveries] == sent
    assert _pending(client, bus) == len(sent)
    assert consumer.ack(d.entry_id for d in deliveries) == len(sent)
    assert _pending(client, bus) == 0
    assert consumer.read(count=10, block_ms=50) == []
    stats = consumer.stats()
    assert (stats.delivered, stats.acked, sum(stats.dead_lettered.values())) == (21, 21, 0)


def test_stream_length_is_bounded_by_count_and_bytes(bus: TraceBusConfig, client: redis.Redis) -> None:
    redis_config: Any = client.config_get("stream-node-max-entries")
    node = int(redis_config["stream-node-max-entries"])
    _export_all(
        dataclasses.replace(bus, stream_maxlen=200), [make_record(f"r{i}") for i in range(1000)]
    ).close()
    assert 200 <= client.xlen(bus.stream) <= 200 + node  # MAXLEN ~ trims whole nodes
    client.delete(bus.stream)
    size = len(encode(make_record("r0")))
    by_bytes = dataclasses.replace(bus, stream_max_bytes=100 * size)
    _export_all(by_bytes, [make_record(f"r{i}") for i in range(1000)]).close()
    assert 95 <= client.xlen(bus.stream) <= 100 + node


def test_oversized_records_are_dropped_at_export(bus: TraceBusConfig) -> None:
    exporter = TraceExporter(dataclasses.replace(bus, max_record_bytes=200))
    assert not exporter.export(make_record(output_ids=list(range(100))))
    assert exporter.stats().dropped_oversized == 1
    exporter.close()


CRASHING_CONSUMER = """
import dataclasses, json, os, signal, sys
from borealis.tracebus import TraceBusConfig
from worker.traces.consumer import TraceConsumer
consumer = TraceConsumer(TraceBusConfig(**json.loads(sys.argv[1])), "doomed")
print(len(consumer.read(count=100, block_ms=2000)), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_records_of_a_killed_consumer_are_redelivered(bus: TraceBusConfig, client: redis.Redis) -> None:
    config = dataclasses.replace(bus, claim_idle_ms=300)
    TraceConsumer(config, "survivor").read(count=1, block_ms=0)  # creates the group before traffic
    _export_all(config, [make_record(f"req-{i}") for i in range(5)]).close()
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING_CONSUMER, json.dumps(dataclasses.asdict(config))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert crashed.returncode == -9 and crashed.stdout.strip() == "5", crashed.stderr
    assert _pending(client, config) == 5

    survivor = TraceConsumer(config, "survivor")
    assert survivor.read(count=10, block_ms=50) == []  # not idle long enough to be presumed dead
    time.sleep(0.35)
    claimed = _read_all(survivor, 5)
    assert len(claimed) == 5 and survivor.stats().claimed == 5
    survivor.ack(claimed)
    assert _pending(client, config) == 0


def test_a_restarted_consumer_first_rereads_its_own_backlog(bus: TraceBusConfig) -> None:
    _export_all(bus, [make_record(f"req-{i}") for i in range(3)]).close()
    first = TraceConsumer(bus, "trainer-0")
    unacked = [d.entry_id for d in first.read(count=10, block_ms=500)]
    restarted = TraceConsumer(bus, "trainer-0")  # claim_idle is 60 s: no claim can explain a delivery
    again = [d.entry_id for d in restarted.read(count=10, block_ms=0)]
    assert again == unacked and len(again) == 3
    assert restarted.read(count=10, block_ms=0) == []


def test_malformed_records_go_to_the_dead_letter_stream(bus: TraceBusConfig, client: redis.Redis) -> None:
    config = dataclasses.replace(bus, max_record_bytes=2048)
    consumer = TraceConsumer(config, "trainer-a")
    good = make_record("good")
    bad = {
        "bad_json": {PAYLOAD_FIELD: b"{oops"},
        "schema": {PAYLOAD_FIELD: b'{"request_id": "x"}'},
        "wrong_version": {PAYLOAD_FIELD: json.dumps(good.model_dump() | {"wire_version": 99}).encode()},
        "oversized": {PAYLOAD_FIELD: b"x" * 4096},
        "missing_payload": {b"something": b"else"},
    }
    consumer.read(count=1, block_ms=0)
    for fields in bad.values():
        client.xadd(config.stream, fields)  # type: ignore[arg-type]
    client.xadd(config.stream, {PAYLOAD_FIELD: encode(good)})
    deliveries = consumer.read(count=100, block_ms=500)
    assert [d.record for d in deliveries] == [good]
    assert consumer.stats().dead_lettered == dict.fromkeys(bad, 1)
    dead: Any = client.xrange(config.dead_letter_stream)
    assert sorted(fields[b"reason"].decode() for _, fields in dead) == sorted(bad)
    assert _pending(client, config) == 1  # the dead-lettered entries were acked; only `good` waits


def test_poison_records_are_dead_lettered_after_too_many_deliveries(
    bus: TraceBusConfig, client: redis.Redis
) -> None:
    config = dataclasses.replace(bus, claim_idle_ms=100, max_deliveries=2)
    consumer = TraceConsumer(config, "trainer-a")
    consumer.read(count=1, block_ms=0)
    client.xadd(config.stream, {PAYLOAD_FIELD: encode(make_record("poison"))})
    for name in ("crash-1", "crash-2"):  # each trainer takes it and dies without acking
        time.sleep(0.15)
        assert len(_read_all(TraceConsumer(config, name), 1)) == 1
    time.sleep(0.15)
    assert _read_all(consumer, 1, timeout_s=0.5) == []
    assert consumer.stats().dead_lettered == {"max_deliveries": 1}
    assert _pending(client, config) == 0


def test_pending_records_trimmed_from_the_stream_are_skipped(
    bus: TraceBusConfig, client: redis.Redis
) -> None:
    _export_all(bus, [make_record(f"req-{i}") for i in range(3)]).close()
    assert len(TraceConsumer(bus, "trainer-0").read(count=10, block_ms=500)) == 3
    client.xtrim(bus.stream, maxlen=0)  # the bounded stream overtook a slow trainer
    restarted = TraceConsumer(bus, "trainer-0")
    assert restarted.read(count=10, block_ms=0) == []
    assert restarted.stats().trimmed == 3
    assert _pending(client, bus) == 0


def test_a_live_consumer_keeps_the_records_it_has_not_acked_yet(bus: TraceBusConfig) -> None:
    config = dataclasses.replace(bus, claim_idle_ms=100, max_deliveries=2)
    consumer = TraceConsumer(config, "trainer-a")
    consumer.read(count=1, block_ms=0)
    _export_all(config, [make_record(f"req-{i}") for i in range(3)]).close()
    held = [d.entry_id for d in consumer.read(count=10, block_ms=500)]  # training on them, not acked
    time.sleep(0.3)
    for _ in range(3):  # idle past claim_idle_ms, yet neither redelivered nor taken for poison
        assert consumer.read(count=10, block_ms=50) == []
    assert consumer.stats().dead_lettered == {} and consumer.ack(held) == 3


def test_claims_page_through_a_long_pending_list(bus: TraceBusConfig) -> None:
    config = dataclasses.replace(bus, claim_idle_ms=100)
    survivor = TraceConsumer(config, "survivor")
    survivor.read(count=1, block_ms=0)
    _export_all(config, [make_record(f"req-{i}") for i in range(35)]).close()
    held = [d.entry_id for d in survivor.read(count=10, block_ms=500)]  # its own, first in the list
    doomed = [d.entry_id for d in TraceConsumer(config, "doomed").read(count=25, block_ms=500)]
    time.sleep(0.2)
    claimed = _read_all(survivor, 25, count=10)
    assert sorted(claimed) == sorted(doomed) and not set(claimed) & set(held)
