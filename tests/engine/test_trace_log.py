"""The final event's per-step log describes exactly the trees the engine verified and what it kept."""

from __future__ import annotations

import pytest

from borealis.wire import TraceRecord
from tests.engine.helpers import greedy_request, random_runner
from tests.engine.test_engine_greedy import MODES, prompts
from worker.engine.engine import EngineConfig, SpecEngine
from worker.engine.llama import LlamaModel
from worker.engine.tracelog import wire_steps
from worker.engine.types import StepTrace, TokenEvent


def run(engine: SpecEngine, count: int, new: int) -> dict[str, tuple[list[int], list[int], TokenEvent]]:
    batch = prompts(count, seed=5)
    for i, prompt in enumerate(batch):
        engine.submit(greedy_request(f"r{i}", prompt, new + 3 * i, stop=(2,)))
    outputs: dict[str, list[int]] = {f"r{i}": [] for i in range(count)}
    finals: dict[str, TokenEvent] = {}
    while engine.has_work():
        for event in engine.step():
            outputs[event.request_id].extend(event.token_ids)
            if event.finish_reason is not None:
                finals[event.request_id] = event
    return {rid: (batch[int(rid[1:])], outputs[rid], finals[rid]) for rid in outputs}


def path_tokens(step: StepTrace, leaf: int) -> list[int]:
    tokens = []
    while leaf >= 0:
        tokens.append(step.tokens[leaf])
        leaf = step.parents[leaf]
    return tokens[::-1]


@pytest.mark.parametrize("mode", ["hybrid_tree", "draft_chain", "ngram_chain"])
def test_trace_log_matches_output(mode: str, tiny_model: LlamaModel) -> None:
    spec = MODES[mode]
    engine = SpecEngine(
        tiny_model, EngineConfig(max_batch=3, max_seq_len=256, spec=spec), random_runner(tiny_model, 48)
    )
    drafted = ngram_only = 0
    for prompt, output, final in run(engine, 5, 24).values():
        assert final.trace is not None and final.stats is not None
        trace = final.trace
        assert len(trace) == final.stats.num_steps
        assert [s.position for s in trace] == sorted({s.position for s in trace})
        assert trace[0].position == 1  # the first token comes from the prefill, not a verification step
        ends = [s.position + s.accepted + 1 for s in trace]
        assert ends[:-1] == [s.position for s in trace[1:]] and ends[-1] >= len(output)
        for step in trace:
            assert all(-1 <= p < i for i, p in enumerate(step.parents))
            kept = output[step.position : step.position + step.accepted]
            if step.accepted:  # the accepted path is a root-to-node path of the tree
                leaves = [i for i in range(len(step.tokens)) if path_tokens(step, i) == kept]
                assert leaves
            assert all(0.0 <= prob <= 1.0 for prob in step.draft_probs)
            drafted += sum(prob > 0.0 for prob in step.draft_probs)  # 0.0: only n-gram lookup proposed it
            ngram_only += sum(prob == 0.0 for prob in step.draft_probs)
        record = TraceRecord(
            request_id="r",
            model="tiny",
            domain="code",
            domain_source="request",
            started_at=0.0,
            finished_at=1.0,
            finish_reason=final.finish_reason or "length",
            prompt_ids=prompt,
            output_ids=output,
            steps=wire_steps(trace, len(output)),
        )
        assert sum(s.accepted for s in record.steps) == sum(s.accepted for s in trace)
    assert (drafted > 0) == spec.use_draft and (ngram_only > 0) == spec.use_ngram


def test_trace_log_can_be_switched_off(tiny_model: LlamaModel) -> None:
    config = EngineConfig(max_batch=2, max_seq_len=256, spec=MODES["hybrid_tree"], record_traces=False)
    engine = SpecEngine(tiny_model, config, random_runner(tiny_model, 48))
    assert all(final.trace is None for _, _, final in run(engine, 2, 8).values())
