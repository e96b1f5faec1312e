"""The trace feature side store: target features of a served request, kept briefly in Redis.

The inference worker has already computed, for every position it committed, the three feature
layers the draft reads and the final hidden state the target's head turns into logits. Shipping
them (float16) lets the trainer build a training example with one head matmul instead of a
full-target prefill. They are large (4 x hidden x 2 bytes per token, 4.6 KB for SmolLM2), so they
never ride in the trace stream: a record names a key, the blob lives under that key with a TTL,
and each worker keeps its own writes within a byte budget over the TTL window, dropping (and
counting) what does not fit. A missing, expired or malformed blob only costs the trainer a prefill.

Blob layout: a 16-byte header (magic, layout version, rows, width) then ``rows x width`` float16
values, row-major.
"""

from __future__ import annotations

import logging
import struct
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import redis

from borealis.tracebus import TraceBusConfig

log = logging.getLogger(__name__)

MAGIC = b"BRF1"
LAYOUT_VERSION = 1
_HEADER = struct.Struct("<4sIII")  # magic, layout version, rows, width


class FeatureBlobError(ValueError):
    """A blob that is not a feature tensor this trainer can use."""


def encode_features(features: np.ndarray) -> bytes:
    """``[rows, width]`` float16 to a blob (torch-free, like the rest of the trace bus)."""
    if features.ndim != 2 or features.dtype != np.float16:
        raise ValueError("features must be a 2-D float16 array")
    rows, width = features.shape
    header = _HEADER.pack(MAGIC, LAYOUT_VERSION, rows, width)
    return header + np.ascontiguousarray(features).tobytes()


def decode_features(blob: bytes, width: int, max_rows: int) -> np.ndarray:
    """A blob back to ``[rows, width]`` float16; refuses any other width, more rows than the trace has."""
    if len(blob) < _HEADER.size:
        raise FeatureBlobError("feature blob shorter than its header")
    magic, version, rows, blob_width = _HEADER.unpack_from(blob)
    if magic != MAGIC or version != LAYOUT_VERSION:
        raise FeatureBlobError("not a feature blob of this layout")
    if blob_width != width:
        raise FeatureBlobError(f"features of width {blob_width}, the target needs {width}")
    if not 0 < rows <= max_rows:
        raise FeatureBlobError(f"{rows} feature rows for a trace of {max_rows} tokens")
    if len(blob) != _HEADER.size + rows * width * 2:
        raise FeatureBlobError("feature blob size does not match its header")
    values = np.frombuffer(blob, dtype=np.float16, offset=_HEADER.size)
    return values.reshape(rows, width).copy()  # writable, and independent of the Redis reply


@dataclass
class FeatureWriteStats:
    stored: int = 0
    dropped_budget: int = 0  # over the worker's byte budget for the TTL window
    failed: int = 0  # Redis refused the write (e.g. out of memory); the trace itself still ships
    window_bytes: int = 0


class FeatureBudget:
    """Bytes this worker has written in the last TTL: what of its writes can still be in Redis."""

    def __init__(self, max_bytes: int, ttl_s: float) -> None:
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._writes: deque[tuple[float, int]] = deque()
        self._bytes = 0

    def admit(self, size: int, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        while self._writes and self._writes[0][0] <= now:
            self._bytes -= self._writes.popleft()[1]
        if self._bytes + size > self.max_bytes:
            return False
        self._writes.append((now + self.ttl_s, size))
        self._bytes += size
        return True

    @property
    def bytes(self) -> int:
        return self._bytes


@dataclass
class FeatureReadStats:
    hits: int = 0
    missing: int = 0  # expired, dropped at the worker, or never written
    refused: int = 0  # a key outside this appliance's feature prefix, or a malformed blob


class FeatureReader:
    """The trainer's side: a record's features, or None (then it recomputes them with a prefill)."""

    def __init__(self, client: redis.Redis, key_prefix: str, width: int) -> None:
        self.client = client
        self.key_prefix = key_prefix
        self.width = width
        self.stats = FeatureReadStats()

    def get(self, key: str | None, tokens: int) -> np.ndarray | None:
        if key is None:
            return None
        if not key.startswith(self.key_prefix):  # a record may not point the trainer at other keys
            self.stats.refused += 1
            return None
        try:
            blob = self.client.get(key)
        except redis.RedisError as exc:
            log.warning("feature store unavailable, recomputing features: %s", exc)
            self.stats.missing += 1
            return None
        if not isinstance(blob, bytes):
            self.stats.missing += 1
            return None
        try:
            features = decode_features(blob, self.width, tokens)
        except FeatureBlobError as exc:
            log.warning("feature blob %s refused: %s", key, exc)
            self.stats.refused += 1
            return None
        self.stats.hits += 1
        return features


def feature_reader(config: TraceBusConfig, width: int) -> FeatureReader:
    client = redis.Redis.from_url(config.redis_url, socket_connect_timeout=2.0, socket_timeout=5.0)
    return FeatureReader(client, config.features_key_prefix, width)
