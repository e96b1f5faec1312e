"""Helpers shared by the engine tests: drive an engine to completion, build drafts, run HF greedy."""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch

from worker.draft.model import new_draft
from worker.draft.runner import DraftRunner
from worker.draft.vocab import DraftVocab
from worker.engine.engine import SpecEngine
from worker.engine.llama import LlamaModel
from worker.engine.types import GenerationRequest, SamplingParams, SpecStats


def run_all(
    engine: SpecEngine, requests: list[GenerationRequest]
) -> tuple[dict[str, list[int]], dict[str, SpecStats]]:
    for request in requests:
        engine.submit(request)
    outputs: dict[str, list[int]] = {r.request_id: [] for r in requests}
    stats: dict[str, SpecStats] = {}
    for _ in range(10_000):
        if not engine.has_work():
            break
        for event in engine.step():
            outputs.setdefault(event.request_id, []).extend(event.token_ids)
            if event.finish_reason is not None:
                assert event.stats is not None
                stats[event.request_id] = event.stats
    assert not engine.has_work()
    return outputs, stats


def greedy_request(rid: str, prompt: list[int], new: int, stop: tuple[int, ...] = ()) -> GenerationRequest:
    return GenerationRequest(rid, prompt, SamplingParams(max_new_tokens=new, stop_token_ids=stop))


def hf_greedy(hf: Any, prompt: list[int], new: int, eos: int | None = None) -> list[int]:
    with torch.no_grad():
        out = hf.generate(
            torch.tensor([prompt]),
            max_new_tokens=new,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=0,
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        )
    return out[0, len(prompt) :].tolist()


def random_runner(model: LlamaModel, vocab_size: int, seed: int = 0) -> DraftRunner:
    counts = Counter({token: model.spec.vocab_size - token for token in range(model.spec.vocab_size)})
    vocab = DraftVocab.from_counts(counts, vocab_size, model.spec.vocab_size)
    return DraftRunner(new_draft(model.spec, vocab, seed), model.embed)
