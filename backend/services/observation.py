"""Watches each request's chunk stream for metrics and live acceptance, without touching its content."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator

from starlette.concurrency import run_in_threadpool

from backend.services.inference import NoWorkerAvailable, WorkerFailed, WorkerRejected
from backend.services.live_monitor import LiveMonitor
from backend.services.metrics import ServingMetrics
from backend.services.serving_stats import ServingStats
from borealis.wire import GenerateChunk


class RequestObserver:
    def __init__(self, metrics: ServingMetrics, monitor: LiveMonitor, stats: ServingStats) -> None:
        self.metrics = metrics
        self.monitor = monitor
        self.stats = stats

    async def observe(
        self, stream: AsyncGenerator[GenerateChunk, None], domain: str | None, streamed: bool
    ) -> AsyncGenerator[GenerateChunk, None]:
        """``streamed``: the worker sends text as it comes; otherwise it sends one final chunk, and the
        first token's time is the request's latency less the worker's time after its first token."""
        started = time.monotonic()
        first_token_s: float | None = None
        last_chunk_at: float | None = None
        try:
            async for chunk in stream:
                if chunk.text:
                    now = time.monotonic()
                    if first_token_s is None:
                        first_token_s = now - started
                    if last_chunk_at is not None:
                        self.metrics.observe_chunk_gap(now - last_chunk_at)
                    last_chunk_at = now
                if chunk.finish_reason == "error":
                    self._error(502, domain)
                elif chunk.finish_reason is not None:
                    latency_s = time.monotonic() - started
                    if not streamed:
                        after = chunk.after_first_token_seconds
                        first_token_s = None if after is None else max(0.0, latency_s - after)
                    await self._finished(chunk, domain, latency_s, first_token_s)
                yield chunk
        except WorkerRejected as exc:
            self._error(exc.status, domain)
            raise
        except NoWorkerAvailable:
            self._error(503, domain)
            raise
        except WorkerFailed:
            self._error(502, domain)
            raise
        finally:
            await stream.aclose()

    def _error(self, status: int, domain: str | None) -> None:
        self.metrics.observe_error(status)
        self.stats.record_error(domain)

    async def _finished(
        self, chunk: GenerateChunk, domain: str | None, latency_s: float, first_token_s: float | None
    ) -> None:
        self.metrics.observe_finished(chunk, domain, latency_s, first_token_s)
        self.stats.record_finished(chunk, domain)
        stats = chunk.spec_decode
        if stats is not None:
            await run_in_threadpool(
                self.monitor.record, stats.draft_version, domain, stats.num_steps, stats.num_accepted_tokens
            )
