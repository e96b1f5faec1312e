"""Real speculative traces for offline benchmarks: requests decoded in-process with a draft.

The traces carry what the online trainer would receive (accepted and rejected proposals, and the
features when recorded), so ``bench ablation`` and ``bench trainer`` train on the real thing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from worker.draft.runner import DraftRunner
from worker.engine.engine import EngineConfig, SpecConfig, SpecEngine
from worker.engine.llama import LlamaModel
from worker.engine.types import GenerationRequest, SamplingParams, StepTrace, TokenEvent


@dataclass(frozen=True)
class ServedTrace:
    prompt: list[int]
    output: list[int]
    steps: tuple[StepTrace, ...]
    features: torch.Tensor | None  # [N, 4H] float16 when the engine recorded features


def serve_traces(
    target: LlamaModel,
    runner: DraftRunner,
    prompts: list[list[int]],
    max_new_tokens: int,
    eos: tuple[int, ...],
    record_features: bool = False,
) -> list[ServedTrace]:
    """Each request decoded greedily with speculation on, in order."""
    config = EngineConfig(
        max_batch=8, max_seq_len=2048, spec=SpecConfig(mode="tree"), record_features=record_features
    )
    engine = SpecEngine(target, config)
    engine.swap_draft(runner)
    params = SamplingParams(max_new_tokens=max_new_tokens, stop_token_ids=eos)
    for index, prompt in enumerate(prompts):
        engine.submit(GenerationRequest(str(index), prompt, params))
    outputs: dict[str, list[int]] = {str(i): [] for i in range(len(prompts))}
    finals: dict[str, TokenEvent] = {}
    while engine.has_work():
        for event in engine.step():
            outputs[event.request_id].extend(event.token_ids)
            if event.finish_reason is not None:
                finals[event.request_id] = event
    served = []
    for i, prompt in enumerate(prompts):
        final = finals.get(str(i))
        trace = final.trace if final is not None and final.trace is not None else ()
        features = final.features if final is not None else None
        served.append(ServedTrace(prompt, outputs[str(i)], trace, features))
    return served
