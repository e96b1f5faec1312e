"""The target's own greedy continuations, batched through the engine with speculation off.

A draft learns to predict the target, so the target's outputs (not the prompts' human text) are its
training data; batching is what makes generating them affordable on CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

from worker.engine.engine import EngineConfig, SpecConfig, SpecEngine
from worker.engine.llama import LlamaModel
from worker.engine.types import GenerationRequest, SamplingParams


def greedy_outputs(
    target: LlamaModel,
    prompts: Sequence[list[int]],
    max_new_tokens: int,
    batch: int = 8,
    stop_token_ids: tuple[int, ...] = (),
) -> list[list[int]]:
    """Greedy continuation of every prompt (stopping at a stop token or the length limit)."""
    if not prompts:
        return []
    longest = max(len(p) for p in prompts) + max_new_tokens
    config = EngineConfig(
        max_batch=batch, max_seq_len=longest, spec=SpecConfig(mode="off"), record_traces=False
    )
    engine = SpecEngine(target, config)
    params = SamplingParams(max_new_tokens=max_new_tokens, stop_token_ids=stop_token_ids)
    for i, prompt in enumerate(prompts):
        engine.submit(GenerationRequest(str(i), list(prompt), params))
    outputs: list[list[int]] = [[] for _ in prompts]
    while engine.has_work():
        for event in engine.step():
            outputs[int(event.request_id)].extend(event.token_ids)
    return outputs
