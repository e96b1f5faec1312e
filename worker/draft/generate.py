"""The target's own greedy continuations, batched through the engine with speculation off.

A draft learns to predict the target, so the target's outputs (not the prompts' human text) are its
training data; batching is what makes generating them affordable on CPU. The engine can hand back,
with each output, the target features of every position it read while generating (what an inference
worker ships the online trainer), so building training examples needs no second, prefill forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from worker.engine.engine import EngineConfig, SpecConfig, SpecEngine
from worker.engine.llama import LlamaModel
from worker.engine.types import GenerationRequest, SamplingParams


@dataclass(frozen=True)
class Continuation:
    output: list[int]  # the greedy continuation, stopping at a stop token or the length limit
    features: torch.Tensor | None  # [N, 4H] float16 for the first N of prompt + output (engine layout)


def greedy_continuations(
    target: LlamaModel,
    prompts: Sequence[list[int]],
    max_new_tokens: int,
    batch: int = 8,
    stop_token_ids: tuple[int, ...] = (),
    features: bool = False,
) -> list[Continuation]:
    """Greedy continuation of every prompt; with ``features``, each with the target features the
    engine recorded (:attr:`worker.engine.types.TokenEvent.features`)."""
    if not prompts:
        return []
    longest = max(len(p) for p in prompts) + max_new_tokens
    config = EngineConfig(
        max_batch=batch,
        max_seq_len=longest,
        spec=SpecConfig(mode="off"),
        record_traces=False,
        record_features=features,
    )
    engine = SpecEngine(target, config)
    params = SamplingParams(max_new_tokens=max_new_tokens, stop_token_ids=stop_token_ids)
    for i, prompt in enumerate(prompts):
        engine.submit(GenerationRequest(str(i), list(prompt), params))
    outputs: list[list[int]] = [[] for _ in prompts]
    recorded: list[torch.Tensor | None] = [None for _ in prompts]
    while engine.has_work():
        for event in engine.step():
            outputs[int(event.request_id)].extend(event.token_ids)
            if event.features is not None:
                recorded[int(event.request_id)] = event.features
    return [Continuation(output, stored) for output, stored in zip(outputs, recorded, strict=True)]


def greedy_outputs(
    target: LlamaModel,
    prompts: Sequence[list[int]],
    max_new_tokens: int,
    batch: int = 8,
    stop_token_ids: tuple[int, ...] = (),
) -> list[list[int]]:
    """Greedy continuation of every prompt (stopping at a stop token or the length limit)."""
    return [c.output for c in greedy_continuations(target, prompts, max_new_tokens, batch, stop_token_ids)]
