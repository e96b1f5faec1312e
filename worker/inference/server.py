"""The inference worker's HTTP face: NDJSON token streams for the control plane.

The engine itself knows no HTTP; this module adapts ``EngineRunner`` events into
``GenerateChunk`` lines and aborts generation when the caller goes away.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from borealis.secrets import tokens_equal
from borealis.wire import (
    WIRE_VERSION,
    AcceptedBySource,
    GenerateChunk,
    GenerateRequest,
    SpecDecodeStats,
    WorkerError,
)
from worker.engine.types import GenerationRequest, SamplingParams, SpecStats, TokenEvent
from worker.inference.detokenizer import StopStringStream
from worker.inference.runner import EngineRunner
from worker.inference.tokenization import PromptBuilder, PromptRejected
from worker.inference.trace_export import FinishedRequest, TraceSink


@dataclass
class WorkerState:
    worker_id: str
    model_name: str
    runner: EngineRunner
    prompts: PromptBuilder
    cluster_token: str
    max_requests: int  # admitted at once (decoding + queued); beyond, 503 with Retry-After
    stream_interval_seconds: float = 0.0  # a streamed request's tokens handed over at most this often
    draft_version: str | None = None
    traces: TraceSink | None = None  # None: no trace bus configured
    in_flight: set[str] = field(default_factory=set)  # request ids admitted and not yet finished


def _spec_stats(stats: SpecStats | None, draft_version: str | None) -> SpecDecodeStats:
    stats = stats or SpecStats()
    return SpecDecodeStats(
        num_steps=stats.num_steps,
        num_drafts=stats.num_drafts,
        num_draft_tokens=stats.num_draft_tokens,
        num_accepted_tokens=stats.num_accepted_tokens,
        accepted_per_position=list(stats.accepted_per_position),
        accepted_by_source=AcceptedBySource(draft=stats.accepted_from_draft, ngram=stats.accepted_from_ngram),
        mean_acceptance_length=round(stats.mean_acceptance_length, 4),
        draft_version=draft_version,
        decode_seconds=round(stats.decode_seconds, 6),
        target_only_seconds=round(stats.target_only_seconds, 6),
        prefill_seconds=round(stats.prefill_seconds, 6),
    )


def _line(chunk: GenerateChunk) -> bytes:
    return chunk.model_dump_json().encode() + b"\n"


class _Relay:
    """The engine thread's hand-off of one request's events to the HTTP loop.

    Each event handed over wakes the loop, whose chunk work (detokenizing, serialising, writing) then
    holds the interpreter lock while the engine thread's next step wants it: about 0.8 ms a step on
    2 cores, 50 ms of a 96-token request, none of it in the engine's own timings; the chunk then costs
    the control plane and the client as much again. A request whose caller does not stream (and has
    no stop strings to watch) is therefore handed over once, at its end, with all its tokens, as
    vLLM's final-only outputs are; a streamed one at most every ``interval`` seconds (its first
    token at once), holding the steps in between, as vLLM's and SGLang's stream intervals do."""

    def __init__(
        self,
        post: Callable[[TokenEvent | BaseException], None],
        during: bool,
        interval: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._post = post
        self._clock = clock
        self._during = during  # hand tokens over while decoding (else only at the end)
        self._interval = interval
        self._tokens: list[int] = []
        self._posted_at: float | None = None  # monotonic: when tokens were last handed over
        self._first_token_at: float | None = None  # monotonic, on the engine thread
        # set before the final event is posted, so the loop reads it once that event arrives
        self.after_first_token_seconds: float | None = None

    def __call__(self, event: TokenEvent | BaseException) -> None:
        if isinstance(event, BaseException):
            self._post(event)
            return
        now = self._clock()
        if self._first_token_at is None and event.token_ids:
            self._first_token_at = now
        if event.finish_reason is not None and self._first_token_at is not None:
            self.after_first_token_seconds = round(now - self._first_token_at, 6)
        self._tokens.extend(event.token_ids)
        if event.finish_reason is not None or (self._during and self._due(now)):
            self._post(replace(event, token_ids=self._tokens))
            self._tokens = []
            self._posted_at = now

    def _due(self, now: float) -> bool:
        """Whether a streamed request's held tokens go now: its first ones, then once ``interval`` has
        passed since the last hand-over (so tokens wait at most that and one step)."""
        if not self._tokens:
            return False
        return self._posted_at is None or now - self._posted_at >= self._interval


async def _stream(
    state: WorkerState, request: GenerateRequest, prompt_ids: list[int]
) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[TokenEvent | BaseException] = asyncio.Queue()
    params = SamplingParams(
        max_new_tokens=request.max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        seed=request.seed,
        stop_token_ids=state.prompts.stop_token_ids,
    )

    def post(event: TokenEvent | BaseException) -> None:
        loop.call_soon_threadsafe(events.put_nowait, event)

    # a request with stop strings streams every step: the loop ends it on the text it has seen
    interval = 0.0 if request.stop else state.stream_interval_seconds
    relay = _Relay(post, during=request.stream or bool(request.stop), interval=interval)
    state.in_flight.add(request.request_id)
    state.runner.submit(GenerationRequest(request.request_id, prompt_ids, params, request.domain), relay)
    text = StopStringStream(state.prompts.decode, request.stop)
    output_ids: list[int] = []
    completion = []
    started_at = time.time()
    finished = False
    try:
        while True:
            event = await events.get()
            if isinstance(event, BaseException) or event.finish_reason == "error":
                finished = True
                error = str(event) if isinstance(event, BaseException) else event.error
                yield _line(GenerateChunk(request_id=request.request_id, finish_reason="error", error=error))
                return
            was_stopped = text.stopped
            output_ids.extend(event.token_ids)
            delta = text.push(event.token_ids)
            completion.append(delta)
            if text.stopped and not was_stopped and event.finish_reason is None:
                # A stop string matched: end the sequence; its final event (stats, trace) follows.
                state.runner.finish(request.request_id)
            if event.finish_reason is None:
                if delta:
                    yield _line(GenerateChunk(request_id=request.request_id, text=delta))
                continue
            finished = True
            finish = "stop" if text.stopped else event.finish_reason
            tail = text.flush()
            if state.traces is not None and event.trace is not None:
                state.traces.record(
                    FinishedRequest(
                        request,
                        prompt_ids,
                        output_ids,
                        event.trace,
                        state.prompts.decode(prompt_ids),
                        "".join(completion) + tail,
                        started_at,
                        event.finish_reason,
                        state.draft_version,
                        event.features,
                        event.trace_exact,
                    )
                )
            chunk = GenerateChunk(
                request_id=request.request_id,
                text=delta + tail,
                finish_reason=finish,
                prompt_tokens=len(prompt_ids),
                completion_tokens=len(output_ids),
                spec_decode=_spec_stats(event.stats, state.draft_version),
                queue_seconds=round(event.stats.queue_seconds, 6) if event.stats else None,
                after_first_token_seconds=relay.after_first_token_seconds,
            )
            yield _line(chunk)
            return
    finally:
        state.in_flight.discard(request.request_id)
        if not finished:
            state.runner.abort(request.request_id)


BEARER = HTTPBearer(auto_error=False)


def _refusal(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        WorkerError(status=status, message=message).model_dump(), status_code=status, headers=headers
    )


def create_worker_app(state: WorkerState) -> FastAPI:
    app = FastAPI(title="Borealis inference worker", version=str(WIRE_VERSION))

    def require_cluster(auth: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]) -> None:
        """Only the control plane may call: checked before the body is even parsed."""
        if auth is None or not tokens_equal(auth.credentials, state.cluster_token):
            raise HTTPException(401, "cluster token required")

    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return _refusal(exc.status_code, str(exc.detail))

    @app.get("/health")
    def health() -> dict[str, object]:
        return {
            "status": "ok",
            "worker_id": state.worker_id,
            "model": state.model_name,
            "active_requests": state.runner.active_requests,
            "draft_version": state.draft_version,
        }

    @app.post("/generate", response_model=None, dependencies=[Depends(require_cluster)])
    async def generate(request: GenerateRequest) -> StreamingResponse | JSONResponse:
        """The control plane's vetted request, bounded again by the wire model."""
        if request.request_id in state.in_flight:
            return _refusal(409, f"request id {request.request_id!r} is already running")
        if len(state.in_flight) >= state.max_requests:
            return _refusal(
                503, f"worker busy: {len(state.in_flight)} requests admitted", {"Retry-After": "1"}
            )
        try:
            prompt_ids = await run_in_threadpool(state.prompts.prompt_ids, request)
        except PromptRejected as exc:
            return _refusal(400, str(exc))
        return StreamingResponse(_stream(state, request, prompt_ids), media_type="application/x-ndjson")

    return app
