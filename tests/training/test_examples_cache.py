"""The trainer's example cache: a vocabulary remap carries kept examples over by the target's head
alone; no example is rebuilt by a prefill because the draft's rows moved."""

from __future__ import annotations

from pathlib import Path

import torch

from borealis.wire import TraceRecord
from worker.draft.vocab import DraftVocab
from worker.engine.llama import LlamaModel
from worker.training.examples_cache import ExampleCache


def record(request_id: str, prompt: list[int], output: list[int]) -> TraceRecord:
    return TraceRecord(
        request_id=request_id,
        model="tiny",
        domain="code",
        domain_source="request",
        started_at=1.0,
        finished_at=2.0,
        finish_reason="length",
        prompt_ids=prompt,
        output_ids=output,
    )


def test_a_remapped_vocabulary_costs_no_prefill(tiny_model_dir: Path) -> None:
    tiny_model = LlamaModel.load(tiny_model_dir)
    size = tiny_model.spec.vocab_size
    old = DraftVocab(torch.arange(0, 256), size)
    ids = old.draft_to_target.clone()
    ids[:4] = torch.tensor([300, 301, 302, 303])
    new = DraftVocab(ids, size)
    records = [record(f"r{i}", list(range(10 + i, 30 + i)), [300, 301, 5 + i, 302]) for i in range(3)]
    cache = ExampleCache(tiny_model, 10_000)
    first = [cache.get(r, old) for r in records]
    assert (cache.sources.by_prefill, cache.sources.revocabulary) == (3, 0)
    assert all(cache.get(r, old) is e for r, e in zip(records, first, strict=True))  # kept as they are
    carried = cache.get(records[0], new)
    assert (cache.sources.by_prefill, cache.sources.revocabulary) == (3, 1)
    assert carried.vocab is new and cache.get(records[0], new) is carried  # kept for the new vocabulary
    assert int(carried.target_ids.max()) < new.size and torch.equal(carried.features, first[0].features)
    # an uncached view for another vocabulary (the live draft's, in a shadow evaluation) reuses it too
    view = cache.build(records[1], new)
    assert view.vocab is new and cache.get(records[1], old) is first[1]
    assert (cache.sources.by_prefill, cache.sources.revocabulary) == (3, 2)
    cache.build(record("unseen", [1, 2, 3], [4, 5]), new)
    assert cache.sources.by_prefill == 4
