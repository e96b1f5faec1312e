"""Trace-bus configuration resolved from settings: full Redis keys and limits in one value."""

from __future__ import annotations

from dataclasses import dataclass

from borealis.settings import Settings


@dataclass(frozen=True)
class TraceBusConfig:
    redis_url: str
    stream: str
    dead_letter_stream: str
    group: str
    stream_maxlen: int
    stream_max_bytes: int
    max_record_bytes: int
    export_queue_size: int
    export_queue_bytes: int
    claim_idle_ms: int
    max_deliveries: int
    dead_letter_maxlen: int
    record_features: bool
    features_key_prefix: str
    features_ttl_s: float
    features_max_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> TraceBusConfig:
        """Every key lives under ``redis_key_prefix``, so appliances and test runs never collide."""
        prefix = settings.redis_key_prefix
        return cls(
            redis_url=settings.redis_url,
            stream=f"{prefix}:{settings.trace_stream}",
            dead_letter_stream=f"{prefix}:{settings.trace_dead_letter_stream}",
            group=settings.trace_consumer_group,
            stream_maxlen=settings.trace_stream_maxlen,
            stream_max_bytes=settings.trace_stream_max_bytes,
            max_record_bytes=settings.trace_max_record_bytes,
            export_queue_size=settings.trace_export_queue_size,
            export_queue_bytes=settings.trace_export_queue_bytes,
            claim_idle_ms=round(settings.trace_claim_idle_seconds * 1000),
            max_deliveries=settings.trace_max_deliveries,
            dead_letter_maxlen=settings.trace_dead_letter_maxlen,
            record_features=settings.trace_features,
            features_key_prefix=f"{prefix}:features:",
            features_ttl_s=settings.trace_features_ttl_seconds,
            features_max_bytes=settings.trace_features_max_bytes,
        )
