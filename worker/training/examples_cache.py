"""Training examples kept between rounds: a trace's target features cost one prefill to recompute."""

from __future__ import annotations

from collections import OrderedDict

from borealis.wire import TraceRecord
from worker.draft.examples import Example, example_from_record
from worker.draft.vocab import DraftVocab
from worker.engine.llama import LlamaModel


class ExampleCache:
    """Least recently used first out, within a budget of tokens."""

    def __init__(self, target: LlamaModel, max_tokens: int) -> None:
        self.target = target
        self.max_tokens = max_tokens
        self._examples: OrderedDict[str, Example] = OrderedDict()
        self._tokens = 0

    def get(self, record: TraceRecord, vocab: DraftVocab) -> Example:
        key = record.request_id
        cached = self._examples.get(key)
        if cached is not None:
            self._examples.move_to_end(key)
            return cached
        example = example_from_record(self.target, vocab, record)
        self._examples[key] = example
        self._tokens += len(example)
        while self._examples and self._tokens > self.max_tokens:
            _, dropped = self._examples.popitem(last=False)
            self._tokens -= len(dropped)
        return example
