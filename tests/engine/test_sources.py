"""Accepted tokens by proposer add up to the totals (a token both proposed counts for both)."""

from __future__ import annotations

import pytest

from tests.engine.helpers import greedy_request, random_runner, run_all
from tests.engine.test_engine_greedy import MODES, prompts
from worker.engine.engine import EngineConfig, SpecEngine
from worker.engine.llama import LlamaModel
from worker.engine.types import SpecStats


def served(mode: str, model: LlamaModel) -> list[SpecStats]:
    engine = SpecEngine(
        model, EngineConfig(max_batch=3, max_seq_len=256, spec=MODES[mode]), random_runner(model, 48)
    )
    requests = [greedy_request(f"r{i}", p, 40) for i, p in enumerate(prompts(6, seed=11))]
    return list(run_all(engine, requests)[1].values())


def test_ngram_only_accepts_only_ngram_tokens(tiny_model: LlamaModel) -> None:
    stats = served("ngram_chain", tiny_model)
    assert sum(s.num_accepted_tokens for s in stats) > 0
    for s in stats:
        assert (s.accepted_from_ngram, s.accepted_from_draft) == (s.num_accepted_tokens, 0)


def test_draft_only_accepts_only_draft_tokens(tiny_model: LlamaModel) -> None:
    for s in served("draft_chain", tiny_model):
        assert (s.accepted_from_draft, s.accepted_from_ngram) == (s.num_accepted_tokens, 0)


@pytest.mark.parametrize("mode", ["hybrid_tree", "adaptive_tree"])
def test_merged_proposals_count_each_source(mode: str, tiny_model: LlamaModel) -> None:
    stats = served(mode, tiny_model)
    assert sum(s.num_accepted_tokens for s in stats) > 0
    for s in stats:
        both = s.accepted_from_draft + s.accepted_from_ngram
        assert max(s.accepted_from_draft, s.accepted_from_ngram) <= s.num_accepted_tokens <= both
