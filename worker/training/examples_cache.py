"""Training examples kept between rounds: a trace's target view costs a prefill (or a feature fetch)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

from borealis.wire import TraceRecord
from worker.draft.examples import Example, example_from_record, for_vocab, head_rows
from worker.draft.vocab import DraftVocab
from worker.engine.llama import LlamaModel
from worker.traces.features import FeatureReader
from worker.training.reports import ExampleSourceCounts


@dataclass
class ExampleSources:
    """How the examples built so far got the target's view: shipped features or a target prefill.
    ``revocabulary``: examples carried to a new draft vocabulary by the target's head alone."""

    from_features: int = 0
    by_prefill: int = 0
    revocabulary: int = 0

    def counts(self) -> ExampleSourceCounts:
        return {
            "from_features": self.from_features,
            "by_prefill": self.by_prefill,
            "revocabulary": self.revocabulary,
        }


class ExampleCache:
    """Least recently used first out, within a budget of tokens.

    An example built for another vocabulary (the draft's rows were remapped since) is carried over
    from its kept hidden state when it is next asked for, not thrown away: a remap costs the target's
    head on the examples still used, never a prefill.
    """

    def __init__(self, target: LlamaModel, max_tokens: int, features: FeatureReader | None = None) -> None:
        self.target = target
        self.max_tokens = max_tokens
        self.features = features
        self.sources = ExampleSources()
        self._examples: OrderedDict[str, Example] = OrderedDict()
        self._tokens = 0
        self._head: tuple[DraftVocab, torch.Tensor] | None = None

    def get(self, record: TraceRecord, vocab: DraftVocab) -> Example:
        key = record.request_id
        cached = self._examples.get(key)
        if cached is not None:
            self._examples.move_to_end(key)
            example = self._carried(cached, vocab)
            self._examples[key] = example
            return example
        example = self.build(record, vocab)
        self._examples[key] = example
        self._tokens += len(example)
        while self._examples and self._tokens > self.max_tokens:
            _, dropped = self._examples.popitem(last=False)
            self._tokens -= len(dropped)
        return example

    def build(self, record: TraceRecord, vocab: DraftVocab) -> Example:
        """Uncached: from a kept example of another vocabulary, else from the side store when the
        record's features are still there, else a prefill."""
        cached = self._examples.get(record.request_id)
        if cached is not None:
            return self._carried(cached, vocab)
        tokens = len(record.prompt_ids) + len(record.output_ids)
        stored = self.features.get(record.features_key, tokens) if self.features is not None else None
        if stored is None:
            self.sources.by_prefill += 1
        else:
            self.sources.from_features += 1
        features = torch.from_numpy(stored) if stored is not None else None
        return example_from_record(self.target, vocab, record, stored=features)

    def _carried(self, example: Example, vocab: DraftVocab) -> Example:
        if example.vocab is vocab or example.vocab.same_as(vocab):
            return example
        if self._head is None or not self._head[0].same_as(vocab):
            self._head = (vocab, head_rows(self.target, vocab.draft_to_target))
        self.sources.revocabulary += 1
        return for_vocab(example, vocab, self._head[1])
