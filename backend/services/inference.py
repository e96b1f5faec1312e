"""Routes generation requests to the least-loaded healthy inference worker and relays its stream."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncGenerator, Callable

import httpx
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from backend.crud.workers import healthy_workers
from backend.db.models import Worker
from borealis.wire import GenerateChunk, GenerateRequest, WorkerError

log = logging.getLogger(__name__)


class NoWorkerAvailable(Exception):
    """No healthy inference worker serves the requested model (or every one is full)."""


class Overloaded(Exception):
    """This control plane already relays its limit of requests; the client should retry later."""


class _WorkerBusy(Exception):
    """One worker's queue is full (503): try the next."""


class WorkerRejected(Exception):
    """The worker refused the request (a client error, e.g. prompt too long)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class WorkerFailed(Exception):
    """The worker died or broke the stream after generation had started."""


class InferenceRouter:
    def __init__(
        self,
        sessions: Callable[[], Session],
        client: httpx.AsyncClient,
        stale_after_s: float,
        cluster_token: str,
        max_in_flight: int,
    ) -> None:
        self._sessions = sessions
        self._client = client
        self._stale_after_s = stale_after_s
        self._headers = {"content-type": "application/json", "authorization": f"Bearer {cluster_token}"}
        self._max_in_flight = max_in_flight
        self._in_flight: Counter[str] = Counter()
        self._relaying = 0

    def _candidates(self, model: str) -> list[Worker]:
        with self._sessions() as session:
            workers = [w for w in healthy_workers(session, self._stale_after_s) if w.model == model]
        # Least loaded first: requests this control plane has in flight, then the worker's own report.
        return sorted(workers, key=lambda w: (self._in_flight[w.id], w.active_requests, w.id))

    async def served_models(self) -> set[str]:
        def read() -> set[str]:
            with self._sessions() as session:
                return {w.model for w in healthy_workers(session, self._stale_after_s)}

        return await run_in_threadpool(read)

    async def generate(self, request: GenerateRequest, model: str) -> AsyncGenerator[GenerateChunk, None]:
        """Yield the worker's chunks; fail over to another worker only before any token was sent."""
        if self._relaying >= self._max_in_flight:
            raise Overloaded(f"{self._relaying} requests in flight, the limit of this control plane")
        self._relaying += 1
        try:
            async for chunk in self._generate(request, model):
                yield chunk
        finally:
            self._relaying -= 1

    async def _generate(self, request: GenerateRequest, model: str) -> AsyncGenerator[GenerateChunk, None]:
        candidates = await run_in_threadpool(self._candidates, model)
        if not candidates:
            raise NoWorkerAvailable(f"no healthy inference worker serves model {model!r}")
        last_error: Exception | None = None
        for worker in candidates:
            self._in_flight[worker.id] += 1
            started = False
            try:
                async with self._client.stream(
                    "POST",
                    worker.url.rstrip("/") + "/generate",
                    content=request.model_dump_json(),
                    headers=self._headers,
                ) as response:
                    if response.status_code >= 400:
                        body = await response.aread()
                        raise _rejection(response.status_code, body)
                    async for line in response.aiter_lines():
                        if not line.strip():
                            continue
                        chunk = GenerateChunk.model_validate_json(line)
                        started = True
                        yield chunk
                        if chunk.finish_reason is not None:
                            return
                raise WorkerFailed(f"worker {worker.id} ended the stream without finishing")
            except (httpx.HTTPError, WorkerFailed, _WorkerBusy) as exc:
                if started:
                    raise WorkerFailed(f"worker {worker.id} failed mid-request: {exc}") from exc
                if not isinstance(exc, _WorkerBusy):
                    log.warning("worker %s unreachable, trying the next: %s", worker.id, exc)
                last_error = exc
            finally:
                self._in_flight[worker.id] -= 1
        if isinstance(last_error, _WorkerBusy):
            raise NoWorkerAvailable(f"every worker for {model!r} is at capacity; retry shortly")
        raise NoWorkerAvailable(f"every worker for {model!r} failed: {last_error}")


def _rejection(status: int, body: bytes) -> Exception:
    if status == 503:
        return _WorkerBusy(body.decode(errors="replace")[:200])
    if 400 <= status < 500:
        try:
            return WorkerRejected(status, WorkerError.model_validate_json(body).message)
        except ValueError:
            return WorkerRejected(status, body.decode(errors="replace")[:500])
    return WorkerFailed(f"worker answered {status}: {body.decode(errors='replace')[:200]}")
