"""A running ``sglang.Engine`` behind Borealis's step-driven ``Engine`` interface.

SGLang schedules and batches on its own (a scheduler subprocess); this adapter only moves data. Each
request streams on an event loop owned by this class (one thread), and every streamed chunk becomes a
``TokenEvent`` in a queue that ``step()`` hands to the worker's runner, so the runner, the HTTP
server, the trace export and the swap protocol stay exactly as they are for the CPU engine.

Chunks are incremental (``incremental_streaming_output``) and one per verify step
(``stream_interval=1``); their sizes rebuild the per-step acceptance (``worker.sglang.stats``).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from worker.engine.types import FinishReason, GenerationRequest, SpecStats, TokenEvent
from worker.sglang.stats import reconstruct_steps, spec_stats, step_traces

log = logging.getLogger(__name__)

T = TypeVar("T")
STEP_WAIT_S = 0.02  # step() waits this long for a chunk: the runner's commands are read between waits
FINISH_REASONS: dict[str, FinishReason] = {"stop": "stop", "length": "length"}


class SGLangRuntime(Protocol):
    """What this adapter uses of ``sglang.Engine`` (0.5.23)."""

    tokenizer_manager: Any

    async def async_generate(self, **kwargs: Any) -> Any: ...

    def shutdown(self) -> None: ...


@dataclass
class _Live:
    request: GenerationRequest
    started: float = field(default_factory=time.monotonic)
    output_ids: list[int] = field(default_factory=list)
    chunk_sizes: list[int] = field(default_factory=list)
    ended: bool = False  # finished or aborted here: later chunks are dropped


def sampling_params(request: GenerationRequest) -> dict[str, Any]:
    params = request.params
    out: dict[str, Any] = {
        "max_new_tokens": params.max_new_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "stop_token_ids": list(params.stop_token_ids),
    }
    if params.seed is not None:
        out["sampling_seed"] = params.seed
    return out


class SGLangEngine:
    def __init__(self, launch: Callable[[], SGLangRuntime]) -> None:
        """``launch`` starts an ``sglang.Engine``; it is called again on ``restart``."""
        self._launch = launch
        self.runtime = launch()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sglang-loop", daemon=True)
        self._thread.start()
        self._live: dict[str, _Live] = {}
        self._lock = threading.Lock()
        self._events: queue.Queue[TokenEvent] = queue.Queue()

    # -- Engine -------------------------------------------------------------------------------

    def submit(self, request: GenerationRequest) -> None:
        if not request.prompt_ids:
            raise ValueError("empty prompt")
        if request.params.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        with self._lock:
            if request.request_id in self._live:
                raise ValueError(f"request id {request.request_id!r} is already running")
            live = self._live[request.request_id] = _Live(request)
        asyncio.run_coroutine_threadsafe(self._serve(live), self._loop)

    def abort(self, request_id: str) -> None:
        with self._lock:
            live = self._live.get(request_id)
            if live is not None:
                live.ended = True
        if live is not None:
            self._loop.call_soon_threadsafe(self._abort_in_sglang, request_id)

    def finish(self, request_id: str) -> TokenEvent | None:
        with self._lock:
            live = self._live.get(request_id)
            if live is None or live.ended:
                return None
            live.ended = True
        self._loop.call_soon_threadsafe(self._abort_in_sglang, request_id)
        stats = SpecStats(decode_seconds=time.monotonic() - live.started)
        return TokenEvent(request_id, [], "stop", stats=stats, trace=())

    def has_work(self) -> bool:
        return bool(self._live) or not self._events.empty()

    def step(self) -> list[TokenEvent]:
        try:
            events = [self._events.get(timeout=STEP_WAIT_S)]
        except queue.Empty:
            return []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    # -- control ------------------------------------------------------------------------------

    def call(self, coroutine: Coroutine[Any, Any, T], timeout_s: float = 600) -> T:
        """Run ``coroutine`` on the engine's loop (weight updates) and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=timeout_s)

    def restart(self, launch: Callable[[], SGLangRuntime], drain_timeout_s: float = 600) -> None:
        """Drain, stop SGLang and start it again with ``launch`` (a new draft vocabulary, or none).

        Called on the runner thread between steps, so no new request reaches SGLang meanwhile: those
        wait in the runner's queue and are served by the new engine; nothing in flight is cut off.
        """
        deadline = time.monotonic() + drain_timeout_s
        while self._live and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._live:
            raise RuntimeError(f"{len(self._live)} requests still running after {drain_timeout_s} s")
        self.runtime.shutdown()
        self._launch = launch
        self.runtime = launch()

    def shutdown(self) -> None:
        self.runtime.shutdown()
        asyncio.run_coroutine_threadsafe(self._loop.shutdown_asyncgens(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    # -- on the loop --------------------------------------------------------------------------

    def _abort_in_sglang(self, request_id: str) -> None:
        self.runtime.tokenizer_manager.abort_request(rid=request_id)

    async def _serve(self, live: _Live) -> None:
        request = live.request
        try:
            stream = await self.runtime.async_generate(
                input_ids=list(request.prompt_ids),
                sampling_params=sampling_params(request),
                rid=request.request_id,
                stream=True,
            )
            async for chunk in stream:
                self._on_chunk(live, chunk)
                if chunk["meta_info"].get("finish_reason") is not None:
                    break
        except Exception as exc:  # this request fails alone; the engine serves the others
            log.exception("SGLang request %s failed", request.request_id)
            if not live.ended:
                self._events.put(TokenEvent(request.request_id, [], "error", error=str(exc)[:500]))
        finally:
            with self._lock:
                self._live.pop(request.request_id, None)

    def _on_chunk(self, live: _Live, chunk: dict[str, Any]) -> None:
        ids = [int(i) for i in chunk.get("output_ids") or []]
        meta = chunk["meta_info"]
        live.output_ids.extend(ids)
        if ids:
            live.chunk_sizes.append(len(ids))
        if live.ended:
            return
        finish = meta.get("finish_reason")
        if finish is None:
            if ids:
                self._events.put(TokenEvent(live.request.request_id, ids))
            return
        live.ended = True
        reason = FINISH_REASONS.get(str(finish.get("type")))
        if reason is None:  # SGLang aborted it (our own aborts end the request before this)
            message = str(finish.get("message") or finish)[:500]
            self._events.put(TokenEvent(live.request.request_id, ids, "error", error=f"SGLang: {message}"))
            return
        steps = reconstruct_steps(live.chunk_sizes, meta)
        stats = spec_stats(meta, decode_seconds=time.monotonic() - live.started)
        self._events.put(
            TokenEvent(
                live.request.request_id,
                ids,
                reason,
                stats=stats,
                trace=step_traces(live.output_ids, steps),
                trace_exact=steps.exact or not meta.get("spec_verify_ct"),  # target-only: no steps to rebuild
            )
        )
