"""Watches each request's chunk stream for metrics and live acceptance, without touching its content."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator

from starlette.concurrency import run_in_threadpool

from backend.services.inference import NoWorkerAvailable, WorkerFailed, WorkerRejected
from backend.services.live_monitor import LiveMonitor
from backend.services.metrics import ServingMetrics
from borealis.wire import GenerateChunk


class RequestObserver:
    def __init__(self, metrics: ServingMetrics, monitor: LiveMonitor) -> None:
        self.metrics = metrics
        self.monitor = monitor

    async def observe(
        self, stream: AsyncGenerator[GenerateChunk, None], domain: str | None
    ) -> AsyncGenerator[GenerateChunk, None]:
        started = time.monotonic()
        first_token_s: float | None = None
        try:
            async for chunk in stream:
                if first_token_s is None and chunk.text:
                    first_token_s = time.monotonic() - started
                if chunk.finish_reason == "error":
                    self.metrics.observe_error(502)
                elif chunk.finish_reason is not None:
                    await self._finished(chunk, domain, time.monotonic() - started, first_token_s)
                yield chunk
        except WorkerRejected as exc:
            self.metrics.observe_error(exc.status)
            raise
        except NoWorkerAvailable:
            self.metrics.observe_error(503)
            raise
        except WorkerFailed:
            self.metrics.observe_error(502)
            raise
        finally:
            await stream.aclose()

    async def _finished(
        self, chunk: GenerateChunk, domain: str | None, latency_s: float, first_token_s: float | None
    ) -> None:
        self.metrics.observe_finished(chunk, domain, latency_s, first_token_s)
        stats = chunk.spec_decode
        if stats is not None:
            await run_in_threadpool(
                self.monitor.record, stats.draft_version, domain, stats.num_steps, stats.num_accepted_tokens
            )
