"""The SGLang adapter's mapping, on scripted streams in SGLang 0.5.23's chunk shape (no SGLang here;
``test_sglang_engine.py`` runs the real engine): tokens, statistics, step traces and their exactness,
SGLang's own aborts, a stop-string finish, and the sampling parameters it sends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from worker.engine.types import GenerationRequest, SamplingParams, TokenEvent
from worker.sglang.engine import SGLangEngine

META = {
    "spec_verify_ct": 4,
    "spec_num_correct_drafts": 5,
    "spec_num_proposed_drafts": 12,
    "spec_correct_drafts_histogram": [2, 0, 1, 1],
}


class ScriptedManager:
    def __init__(self) -> None:
        self.aborted: list[str] = []

    def abort_request(self, rid: str) -> None:
        self.aborted.append(rid)


class ScriptedRuntime:
    """Streams the chunk sizes it was given for each request id, then a final chunk."""

    def __init__(self, scripts: dict[str, tuple[list[int], dict[str, Any]]], delay_s: float = 0.0) -> None:
        self.tokenizer_manager = ScriptedManager()
        self.scripts = scripts
        self.delay_s = delay_s
        self.calls: list[dict[str, Any]] = []

    async def async_generate(self, **kwargs: Any) -> AsyncIterator[dict[str, Any]]:
        self.calls.append(kwargs)
        sizes, final_meta = self.scripts[kwargs["rid"]]

        async def stream() -> AsyncIterator[dict[str, Any]]:
            token = 100
            for i, size in enumerate(sizes):
                await asyncio.sleep(self.delay_s)
                ids = list(range(token, token + size))
                token += size
                last = i == len(sizes) - 1
                yield {"output_ids": ids, "meta_info": final_meta if last else {"finish_reason": None}}

        return stream()

    def shutdown(self) -> None:
        pass


def run(engine: SGLangEngine, request_id: str, params: SamplingParams | None = None) -> list[TokenEvent]:
    engine.submit(GenerationRequest(request_id, [1, 2, 3], params or SamplingParams(max_new_tokens=16)))
    events: list[TokenEvent] = []
    deadline = time.monotonic() + 10
    while not (events and events[-1].finish_reason) and time.monotonic() < deadline:
        events += engine.step()
    return events


def test_one_chunk_per_step_gives_tokens_statistics_and_exact_step_traces() -> None:
    final = {**META, "finish_reason": {"type": "length", "length": 10}}
    engine = SGLangEngine(lambda: ScriptedRuntime({"a": ([1, 3, 1, 4, 1], final)}))
    events = run(engine, "a")
    assert [t for e in events for t in e.token_ids] == list(range(100, 110))
    last = events[-1]
    assert last.finish_reason == "length" and last.stats is not None and last.trace_exact
    assert (last.stats.num_steps, last.stats.num_accepted_tokens) == (4, 5)
    assert last.trace is not None and [s.accepted for s in last.trace] == [2, 0, 3, 0]
    engine.shutdown()


def test_coalesced_chunks_ship_no_steps_and_say_so() -> None:
    final = {**META, "finish_reason": {"type": "length", "length": 10}}
    engine = SGLangEngine(lambda: ScriptedRuntime({"a": ([1, 4, 4, 1], final)}))
    last = run(engine, "a")[-1]
    assert last.trace == () and not last.trace_exact
    target_only = SGLangEngine(
        lambda: ScriptedRuntime({"b": ([1, 1, 1], {"finish_reason": {"type": "stop"}})})
    )
    last = run(target_only, "b")[-1]
    assert last.trace == () and last.trace_exact  # nothing was speculated: nothing to rebuild
    engine.shutdown()
    target_only.shutdown()


def test_an_abort_inside_sglang_fails_that_request_with_its_message() -> None:
    final = {"finish_reason": {"type": "abort", "message": "prompt too long"}}
    engine = SGLangEngine(lambda: ScriptedRuntime({"a": ([1], final)}))
    last = run(engine, "a")[-1]
    assert last.finish_reason == "error" and last.error is not None and "prompt too long" in last.error
    engine.shutdown()


def test_finish_ends_the_request_here_aborts_it_in_sglang_and_drops_what_follows() -> None:
    final = {**META, "finish_reason": {"type": "length"}}
    runtime = ScriptedRuntime({"a": ([1, 1, 1, 1, 1, 1, 1, 1], final)}, delay_s=0.05)
    engine = SGLangEngine(lambda: runtime)
    engine.submit(GenerationRequest("a", [1, 2, 3], SamplingParams(max_new_tokens=16)))
    while not engine.step():
        pass
    event = engine.finish("a")
    assert event is not None and event.finish_reason == "stop" and event.trace == ()
    assert engine.finish("a") is None  # already finished
    deadline = time.monotonic() + 5
    while engine.has_work() and time.monotonic() < deadline:
        assert all(e.finish_reason is None for e in engine.step())  # the stream's own end is dropped
    assert runtime.tokenizer_manager.aborted == ["a"] and not engine.has_work()
    engine.shutdown()


def test_sampling_parameters_and_token_ids_are_sent_as_sglang_names_them() -> None:
    runtime = ScriptedRuntime({"a": ([1], {"finish_reason": {"type": "stop"}})})
    engine = SGLangEngine(lambda: runtime)
    params = SamplingParams(max_new_tokens=7, temperature=0.7, top_p=0.9, seed=5, stop_token_ids=(2,))
    run(engine, "a", params)
    (call,) = runtime.calls
    assert call["input_ids"] == [1, 2, 3] and call["rid"] == "a" and call["stream"] is True
    assert call["sampling_params"] == {
        "max_new_tokens": 7,
        "temperature": 0.7,
        "top_p": 0.9,
        "stop_token_ids": [2],
        "sampling_seed": 5,
    }
    engine.shutdown()
