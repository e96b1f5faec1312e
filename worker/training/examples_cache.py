"""Training examples kept between rounds: a trace's target view costs a prefill (or a feature fetch)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

from borealis.wire import TraceRecord
from worker.draft.examples import Example, example_from_record
from worker.draft.vocab import DraftVocab
from worker.engine.llama import LlamaModel
from worker.traces.features import FeatureReader


@dataclass
class ExampleSources:
    """How the examples built so far got the target's view: shipped features or a target prefill."""

    from_features: int = 0
    by_prefill: int = 0


class ExampleCache:
    """Least recently used first out, within a budget of tokens."""

    def __init__(self, target: LlamaModel, max_tokens: int, features: FeatureReader | None = None) -> None:
        self.target = target
        self.max_tokens = max_tokens
        self.features = features
        self.sources = ExampleSources()
        self._examples: OrderedDict[str, Example] = OrderedDict()
        self._tokens = 0

    def get(self, record: TraceRecord, vocab: DraftVocab) -> Example:
        key = record.request_id
        cached = self._examples.get(key)
        if cached is not None:
            self._examples.move_to_end(key)
            return cached
        example = self.build(record, vocab)
        self._examples[key] = example
        self._tokens += len(example)
        while self._examples and self._tokens > self.max_tokens:
            _, dropped = self._examples.popitem(last=False)
            self._tokens -= len(dropped)
        return example

    def clear(self) -> None:
        """Forget every example: they were built for a vocabulary that has changed."""
        self._examples.clear()
        self._tokens = 0

    def build(self, record: TraceRecord, vocab: DraftVocab) -> Example:
        """Uncached: from the side store when the record's features are still there, else a prefill."""
        tokens = len(record.prompt_ids) + len(record.output_ids)
        stored = self.features.get(record.features_key, tokens) if self.features is not None else None
        if stored is None:
            self.sources.by_prefill += 1
        else:
            self.sources.from_features += 1
        features = torch.from_numpy(stored) if stored is not None else None
        return example_from_record(self.target, vocab, record, stored=features)
