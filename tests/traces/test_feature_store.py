"""Trace features in the Redis side store: written beside the record, bounded, expiring, read back safely."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import redis

from borealis.tracebus import TraceBusConfig
from tests.procs import wait_until
from tests.traces.helpers import make_record
from worker.traces.consumer import TraceConsumer
from worker.traces.exporter import TraceExporter
from worker.traces.features import (
    FeatureBlobError,
    FeatureReader,
    decode_features,
    encode_features,
)

WIDTH = 16


def _features(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, WIDTH)).astype(np.float16)


def test_features_ride_beside_the_record_with_a_ttl(bus: TraceBusConfig, client: redis.Redis) -> None:
    record = make_record("req-f")  # 3 prompt + 6 output tokens
    shipped = _features(8)
    exporter = TraceExporter(bus)
    assert exporter.export(record, encode_features(shipped))
    wait_until(lambda: exporter.stats().exported == 1, 10, "trace exported")
    exporter.close()
    [delivery] = TraceConsumer(bus, "reader").read(count=10, block_ms=1000)
    key = delivery.record.features_key
    assert key == f"{bus.features_key_prefix}req-f"
    assert 0 < int(client.ttl(key)) <= bus.features_ttl_s
    reader = FeatureReader(client, bus.features_key_prefix, WIDTH)
    read = reader.get(key, tokens=9)
    assert read is not None and np.array_equal(read, shipped)
    assert exporter.stats().features.stored == 1 and reader.stats.hits == 1


def test_features_over_the_budget_are_dropped_and_counted(bus: TraceBusConfig) -> None:
    blob = encode_features(_features(8))
    small = dataclasses.replace(bus, features_max_bytes=len(blob) + 10)
    exporter = TraceExporter(small)
    assert exporter.export(make_record("a"), blob)
    assert exporter.export(make_record("b"), blob)  # the record still ships, without features
    wait_until(lambda: exporter.stats().exported == 2, 10, "traces exported")
    exporter.close()
    records = {
        d.record.request_id: d.record for d in TraceConsumer(bus, "reader").read(count=10, block_ms=1000)
    }
    assert records["a"].features_key is not None and records["b"].features_key is None
    stats = exporter.stats().features
    assert (stats.stored, stats.dropped_budget) == (1, 1)


def test_features_are_not_shipped_when_switched_off(bus: TraceBusConfig, client: redis.Redis) -> None:
    exporter = TraceExporter(dataclasses.replace(bus, record_features=False))
    assert exporter.export(make_record("off"), encode_features(_features(8)))
    wait_until(lambda: exporter.stats().exported == 1, 10, "trace exported")
    exporter.close()
    [delivery] = TraceConsumer(bus, "reader").read(count=10, block_ms=1000)
    assert delivery.record.features_key is None
    assert not list(client.scan_iter(match=f"{bus.features_key_prefix}*"))


def test_the_reader_refuses_foreign_keys_and_bad_blobs(bus: TraceBusConfig, client: redis.Redis) -> None:
    reader = FeatureReader(client, bus.features_key_prefix, WIDTH)
    client.set(bus.stream + "-not-features", encode_features(_features(4)))
    assert reader.get(bus.stream + "-not-features", tokens=9) is None  # outside the feature prefix
    client.set(f"{bus.features_key_prefix}garbage", b"\x00" * 40)
    assert reader.get(f"{bus.features_key_prefix}garbage", tokens=9) is None
    client.set(f"{bus.features_key_prefix}long", encode_features(_features(12)))
    assert reader.get(f"{bus.features_key_prefix}long", tokens=9) is None  # more rows than tokens
    assert reader.get(f"{bus.features_key_prefix}expired", tokens=9) is None
    assert reader.get(None, tokens=9) is None
    assert (reader.stats.hits, reader.stats.refused, reader.stats.missing) == (0, 3, 1)


def test_blob_decoding_checks_shape_and_size() -> None:
    blob = encode_features(_features(5))
    assert decode_features(blob, WIDTH, max_rows=5).shape == (5, WIDTH)
    for bad, width, rows in (
        (blob, WIDTH * 2, 5),
        (blob, WIDTH, 4),
        (blob[:-2], WIDTH, 5),
        (blob[:8], WIDTH, 5),
    ):
        with pytest.raises(FeatureBlobError):
            decode_features(bad, width, rows)
