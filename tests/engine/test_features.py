"""The features a final event ships are what a prefill of the same tokens computes, row for row."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.engine.helpers import random_runner
from tests.engine.test_engine_greedy import MODES
from tests.engine.test_trace_log import run
from worker.draft.examples import build_example, example_from_features
from worker.draft.generate import greedy_continuations
from worker.draft.vocab import DraftVocab
from worker.engine.engine import EngineConfig, SpecEngine
from worker.engine.llama import LlamaModel, causal_step_input


@pytest.mark.parametrize("mode", ["hybrid_tree", "ngram_chain", "target_only"])
def test_shipped_features_match_a_prefill(mode: str, tiny_model: LlamaModel) -> None:
    config = EngineConfig(max_batch=3, max_seq_len=256, spec=MODES[mode], record_features=True)
    engine = SpecEngine(tiny_model, config, random_runner(tiny_model, 48))
    hidden_size = tiny_model.spec.hidden_size
    for prompt, output, final in run(engine, 5, 24).values():  # 5 requests on 3 slots: slots move
        assert final.features is not None and final.features.dtype == torch.float16
        tokens = prompt + output
        rows = final.features.shape[0]
        assert final.features.shape[1] == 4 * hidden_size
        # every token the target has read: all but the last, or all when a stop token cut the step
        assert len(tokens) - 1 <= rows <= len(tokens)
        ids = torch.tensor([tokens[:rows]])
        hidden, features = tiny_model.forward(causal_step_input(ids, [0]), tiny_model.new_cache(1, rows))
        expected = torch.cat([features[0], hidden[0]], dim=-1)
        torch.testing.assert_close(final.features.float(), expected, atol=2e-2, rtol=1e-2)


def test_an_example_from_features_equals_the_prefill_example(tiny_model: LlamaModel) -> None:
    config = EngineConfig(max_batch=2, max_seq_len=256, spec=MODES["hybrid_tree"], record_features=True)
    engine = SpecEngine(tiny_model, config, random_runner(tiny_model, 48))
    vocab = DraftVocab(torch.arange(0, 96, 2), 96)
    for prompt, output, final in run(engine, 3, 20).values():
        assert final.features is not None
        tokens = prompt + output
        shipped = example_from_features(tiny_model, vocab, tokens, final.features, len(prompt), "code")
        recomputed = build_example(tiny_model, vocab, tokens[: len(shipped)], len(prompt), "code")
        assert torch.equal(shipped.tokens, recomputed.tokens)
        assert torch.equal(shipped.target_argmax, recomputed.target_argmax)
        assert torch.equal(shipped.target_ids[:, 0], recomputed.target_ids[:, 0])
        torch.testing.assert_close(shipped.target_logp[:, 0], recomputed.target_logp[:, 0], atol=5e-2, rtol=0)


def test_features_are_not_kept_unless_asked(tiny_model: LlamaModel) -> None:
    engine = SpecEngine(tiny_model, EngineConfig(max_batch=2, max_seq_len=256, spec=MODES["hybrid_tree"]))
    assert engine.final_hidden.numel() == 0
    for _, _, final in run(engine, 2, 8).values():
        assert final.features is None


def test_draft_train_keeps_the_bf16_targets_recorded_features_and_the_float32_heads_logits(
    tiny_dir: Path, tiny_model: LlamaModel
) -> None:
    """``draft train`` generates with the bf16 target and keeps the features its generation recorded,
    as a bf16 worker would ship them, with the soft targets from the float32 head (not bf16 logits)."""
    fast = LlamaModel.load(tiny_dir, dtype=torch.bfloat16)
    vocab = DraftVocab(torch.arange(0, 96, 2), 96)
    prompt = list(range(3, 13))
    made = greedy_continuations(fast, [prompt], 16, features=True)[0]
    assert made.features is not None
    tokens = prompt + made.output
    example = example_from_features(tiny_model, vocab, tokens, made.features, 10, "code")
    from_bf16_head = example_from_features(fast, vocab, tokens, made.features, 10, "code")
    assert example.target_logp.dtype == torch.float32
    assert torch.equal(example.features, from_bf16_head.features)
    assert not torch.equal(example.target_logp, from_bf16_head.target_logp.float())
