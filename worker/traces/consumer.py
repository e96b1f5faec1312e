"""The trainer's side of the trace bus: a consumer group with acks, crash recovery and a dead letter.

A record stays pending until the trainer acks it (after it is safely in a checkpoint), so a killed
trainer loses nothing: on restart it first re-reads its own pending entries, and entries left
pending by a consumer that never came back are claimed once idle past ``claim_idle_ms``, which must
exceed a trainer's read-to-ack time (else a live trainer's records are taken from it). Records
that cannot be used (oversized, bad JSON, wrong version, schema violation, or redelivered too often,
i.e. poison) go to the dead-letter stream with a reason, are acked and counted. ``read`` and ``ack``
never raise: a Redis outage is counted, logged and retried on the next call.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from borealis.tracebus import TraceBusConfig
from borealis.wire import TraceRecord
from worker.traces.codec import PAYLOAD_FIELD, Rejection, decode, encode

log = logging.getLogger(__name__)

MAX_BLOCK_MS = 5000
DEAD_LETTER_PAYLOAD_BYTES = 4096  # enough to debug a bad record without copying a huge one

Entry = tuple[bytes, dict[bytes, bytes] | None]


@dataclass(frozen=True)
class Delivery:
    entry_id: str
    record: TraceRecord


@dataclass
class ConsumerStats:
    delivered: int = 0
    acked: int = 0
    claimed: int = 0  # taken over from consumers that stopped acking
    trimmed: int = 0  # pending entries the stream had already trimmed away
    dead_lettered: Counter[str] = field(default_factory=Counter)
    redis_errors: int = 0


def consumer_client(url: str) -> redis.Redis:
    """RESP2 replies; a socket timeout above the longest block, so a blocking read is not an outage."""
    return redis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=MAX_BLOCK_MS / 1000 + 5)


class TraceConsumer:
    def __init__(self, config: TraceBusConfig, name: str) -> None:
        """``name`` should be stable per trainer (e.g. its worker id) so a restart finds its own backlog."""
        self._config = config
        self.name = name
        self._client = consumer_client(config.redis_url)
        self._group_ready = False
        self._backlog_cursor: str | None = "0"  # own pending entries left by a previous run
        self._claim_cursor = "-"
        self._next_claim_at = 0.0
        self._stats = ConsumerStats()

    def read(self, count: int = 64, block_ms: int = 1000) -> list[Delivery]:
        """Up to ``count`` records: own backlog first, then stale claims, then new entries (may block)."""
        try:
            self._ensure_group()
            entries = self._backlog(count) if self._backlog_cursor else self._claim_stale(count)
            if len(entries) < count:
                entries += self._read_new(count - len(entries), 0 if entries else block_ms)
            return self._deliver(entries)
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc):
                self._group_ready = False  # the stream was deleted; recreate the group next time
            self._redis_failed("read", exc)
        except redis.RedisError as exc:
            self._redis_failed("read", exc)
        return []

    def ack(self, entry_ids: Iterable[str]) -> int:
        """Acknowledge processed records; a failed ack only means they are delivered again later."""
        ids = list(entry_ids)
        if not ids:
            return 0
        try:
            acked = int(self._client.xack(self._config.stream, self._config.group, *ids))
        except redis.RedisError as exc:
            self._redis_failed("ack", exc)
            return 0
        self._stats.acked += acked
        return acked

    def reject(self, delivery: Delivery, rejection: Rejection) -> None:
        """Dead-letter a record that decoded but that its reader cannot use (e.g. foreign token ids)."""
        fields = {PAYLOAD_FIELD: encode(delivery.record)}
        try:
            self._dead_letter(delivery.entry_id.encode(), fields, rejection)
        except redis.RedisError as exc:
            self._redis_failed("dead-letter", exc)

    def stats(self) -> ConsumerStats:
        return dataclasses.replace(self._stats, dead_lettered=Counter(self._stats.dead_lettered))

    def close(self) -> None:
        self._client.close()

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            self._client.xgroup_create(self._config.stream, self._config.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def _backlog(self, count: int) -> list[Entry]:
        """Entries this consumer read but never acked before it last stopped, oldest first."""
        assert self._backlog_cursor is not None
        entries = self._xreadgroup(self._backlog_cursor, count, None)
        if not entries:
            self._backlog_cursor = None
            return []
        self._backlog_cursor = entries[-1][0].decode()
        return self._drop_poison(entries)

    def _claim_stale(self, count: int) -> list[Entry]:
        """Take over entries idle past ``claim_idle_ms`` in other consumers' pending lists.

        XPENDING + XCLAIM rather than XAUTOCLAIM: this consumer's own pending entries are records it
        is still training on (acked after a checkpoint), and re-claiming them would deliver them twice
        and inflate their delivery count until they looked like poison.
        """
        now = time.monotonic()
        if now < self._next_claim_at:
            return []
        pending: Any = self._client.xpending_range(
            self._config.stream,
            self._config.group,
            min=self._claim_cursor,
            max="+",
            count=count,
            idle=self._config.claim_idle_ms,
        )
        if len(pending) < count:  # a full pass over the pending list: rest before the next one
            self._claim_cursor = "-"
            self._next_claim_at = now + self._config.claim_idle_ms / 2000
        else:
            self._claim_cursor = "(" + _text(pending[-1]["message_id"])
        stale = [item for item in pending if _text(item["consumer"]) != self.name]
        claim = []
        for item in stale:
            if int(item["times_delivered"]) >= self._config.max_deliveries:
                self._dead_letter_pending(item["message_id"])
            else:
                claim.append(item["message_id"])
        if not claim:
            return []
        entries: list[Entry] = self._client.xclaim(  # type: ignore[assignment]
            self._config.stream, self._config.group, self.name, self._config.claim_idle_ms, claim
        )
        self._stats.claimed += sum(1 for _, fields in entries if fields)
        return entries

    def _dead_letter_pending(self, entry_id: bytes) -> None:
        """A record that was delivered ``max_deliveries`` times and never acked keeps killing trainers."""
        found: Any = self._client.xrange(self._config.stream, entry_id, entry_id)
        fields = found[0][1] if found else None
        reason = f"delivered {self._config.max_deliveries} times without an ack"
        self._dead_letter(entry_id, fields, Rejection("max_deliveries", reason))

    def _read_new(self, count: int, block_ms: int) -> list[Entry]:
        return self._xreadgroup(">", count, min(block_ms, MAX_BLOCK_MS) or None)

    def _xreadgroup(self, start: str, count: int, block_ms: int | None) -> list[Entry]:
        response: Any = self._client.xreadgroup(
            self._config.group, self.name, {self._config.stream: start}, count=count, block=block_ms
        )
        if not response:
            return []
        return [entry for _stream, batch in response for entry in batch]

    def _drop_poison(self, entries: list[Entry]) -> list[Entry]:
        """Dead-letter own backlog entries now delivered more than ``max_deliveries`` times."""
        if not entries:
            return entries
        pending: Any = self._client.xpending_range(
            self._config.stream,
            self._config.group,
            min=entries[0][0],
            max=entries[-1][0],
            count=len(entries),
            consumername=self.name,
        )
        delivered = {_text(item["message_id"]): int(item["times_delivered"]) for item in pending}
        kept = []
        for entry_id, fields in entries:
            if delivered.get(_text(entry_id), 0) > self._config.max_deliveries:
                reason = f"delivered {self._config.max_deliveries} times without an ack"
                self._dead_letter(entry_id, fields, Rejection("max_deliveries", reason))
            else:
                kept.append((entry_id, fields))
        return kept

    def _deliver(self, entries: Sequence[Entry]) -> list[Delivery]:
        deliveries = []
        trimmed = []
        for entry_id, fields in entries:
            if not fields:  # read from a pending list after the stream trimmed the entry itself
                trimmed.append(_text(entry_id))
                continue
            decoded = decode(fields, self._config.max_record_bytes)
            if isinstance(decoded, Rejection):
                self._dead_letter(entry_id, fields, decoded)
            else:
                deliveries.append(Delivery(_text(entry_id), decoded))
        if trimmed:
            self._client.xack(self._config.stream, self._config.group, *trimmed)
            self._stats.trimmed += len(trimmed)
        self._stats.delivered += len(deliveries)
        return deliveries

    def _dead_letter(self, entry_id: bytes, fields: dict[bytes, bytes] | None, rejection: Rejection) -> None:
        """Copy the entry (payload truncated) to the dead-letter stream and ack it, atomically."""
        payload = (fields or {}).get(PAYLOAD_FIELD, b"")
        pipe = self._client.pipeline(transaction=True)
        pipe.xadd(
            self._config.dead_letter_stream,
            {
                "reason": rejection.reason,
                "detail": rejection.detail[:1000],
                "source_id": entry_id,
                "consumer": self.name,
                "payload": payload[:DEAD_LETTER_PAYLOAD_BYTES],
            },
            maxlen=self._config.dead_letter_maxlen,
            approximate=True,
        )
        pipe.xack(self._config.stream, self._config.group, entry_id)
        pipe.execute()
        self._stats.dead_lettered[rejection.reason] += 1
        log.warning("trace %s dead-lettered: %s (%s)", _text(entry_id), rejection.reason, rejection.detail)

    def _redis_failed(self, operation: str, exc: redis.RedisError) -> None:
        self._stats.redis_errors += 1
        log.warning("trace consumer %s failed on %s: %s", self.name, operation, exc)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
