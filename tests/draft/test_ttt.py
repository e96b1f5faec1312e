"""Training-time-test unrolling computes what the serving draft computes, step for step."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from borealis.wire import TraceStep
from worker.draft import ttt
from worker.draft.examples import build_example, rejected_proposals
from worker.draft.model import new_draft
from worker.draft.runner import DraftRunner
from worker.draft.ttt import ttt_mask, unroll
from worker.draft.vocab import DraftVocab
from worker.engine.llama import LlamaModel, causal_step_input
from worker.engine.proposals import DraftBatch, draft_paths


def test_mask_is_the_diagonal_pattern() -> None:
    mask = ttt_mask(4, 2).int()
    # step 2, row 3: step-0 rows 0..1, step-1 row 2, step-2 row 3 (itself)
    assert mask[3].tolist() == [*[1, 1, 0, 0], *[0, 0, 1, 0], *[0, 0, 0, 1]]
    assert mask[0].tolist() == [*[0, 0, 0, 0], *[0, 0, 0, 0], *[1, 0, 0, 0]]


@pytest.mark.parametrize("step", [0, 1, 2, 3])
def test_written_out_unroll_attention_is_the_masked_attention_over_every_steps_keys(
    step: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Values and gradients of the written-out attention equal grouped-query attention over all the
    steps' keys under the diagonal mask, which longer batches take."""
    generator = torch.Generator().manual_seed(step)
    batch, heads, kv_heads, length, dim = 2, 6, 2, 9, 16
    q = torch.randn(batch, heads, length, dim, generator=generator)
    keys = [torch.randn(batch, kv_heads, length, dim, generator=generator) for _ in range(step + 1)]
    values = [torch.randn(batch, kv_heads, length, dim, generator=generator) for _ in range(step + 1)]
    upstream = torch.randn(batch, heads, length, dim, generator=generator)
    results = []
    for limit in (batch * heads * length * length, batch * heads * length * length - 1):
        monkeypatch.setattr(ttt, "WRITTEN_OUT_MAX_SCORES", limit)
        inputs = [t.clone().requires_grad_(True) for t in (q, *keys, *values)]
        out = ttt.ttt_attention(inputs[0], inputs[1 : step + 2], inputs[step + 2 :])
        (out * upstream).sum().backward()  # type: ignore[no-untyped-call]
        results.append([out.detach(), *(t.grad for t in inputs)])
    reference = F.scaled_dot_product_attention(
        q, torch.cat(keys, 2), torch.cat(values, 2), attn_mask=ttt_mask(length, step), enable_gqa=True
    )
    torch.testing.assert_close(results[1][0], reference)  # the masked path is that attention
    for written_out, masked in zip(*results, strict=True):
        torch.testing.assert_close(written_out, masked, rtol=1e-5, atol=1e-5)


def test_unroll_matches_serving_chain(tiny_model_dir: Path) -> None:
    """Append the serving draft's own chain to a prefix: unroll step k must give the same probabilities."""
    torch.manual_seed(0)
    target = LlamaModel.load(tiny_model_dir)
    vocab = DraftVocab(torch.arange(0, 4096, 8), target.spec.vocab_size)
    draft = new_draft(target.spec, vocab, seed=1)
    runner = DraftRunner(draft, target.embed, max_positions=64)
    prefix = torch.randint(0, 4096, (12,)).tolist()
    root = len(prefix) - 1
    _, features = target.forward(causal_step_input(torch.tensor([prefix]), [0]), target.new_cache(1, 64))
    cache = runner.new_cache(1, 64)
    runner.forward(
        causal_step_input(torch.tensor([prefix[1:root]]), [0]), runner.fuse(features[:, : root - 1]), cache
    )
    batch = DraftBatch(tokens=[prefix], kv_lens=[root], draft_lens=[root - 1], features=features)
    (path,) = draft_paths(runner, cache, batch, depth=3, topk=1, width=1)[0].paths
    example = build_example(target, vocab, prefix + path.tokens, len(prefix), "code")
    logits = unroll(draft, target.embed, example.tokens.unsqueeze(0), example.features.unsqueeze(0), 3)
    for depth, (token, prob) in enumerate(zip(path.tokens, path.probs, strict=True), start=1):
        row = root + depth - 2
        probs = torch.softmax(logits[depth - 1][0, row].detach(), -1)
        assert int(vocab.draft_to_target[probs.argmax()]) == token
        # features travel as float16 in examples, so agreement is to about 1e-3
        torch.testing.assert_close(float(probs.max()), prob, atol=2e-3, rtol=2e-2)


def test_rejected_proposals_are_placed_where_the_draft_made_them() -> None:
    vocab = DraftVocab.from_counts(Counter(range(40)), 40, 50)
    tokens = [1, 2, 3, 4, 10, 11, 12, 13]  # prompt 1 2 3 4, output 10 11 12 13
    argmax = [0] * len(tokens)
    # step after output[0]: root is absolute index 4 (token 10); tree 11 -> {12 accepted, 30 rejected}, 31
    step = TraceStep(
        position=1,
        proposed=[11, 31, 12, 30, 33],
        draft_probs=[0.5] * 5,
        parents=[-1, -1, 0, 0, 3],
        accepted=2,
    )
    negatives = rejected_proposals(tokens, 4, [step], vocab, argmax).tolist()
    # 31 rejected at depth 1: unroll step 0, row 3; 30 at depth 2: step 1, row 4.
    # 33 sits under a rejected node: its context never happened.
    assert sorted(negatives) == [[0, 3, 31], [1, 4, 30]]
    chain = TraceStep(position=1, proposed=[11, 25, 26], draft_probs=[0.5] * 3, accepted=1)
    assert rejected_proposals(tokens, 4, [chain], vocab, argmax).tolist() == [[1, 4, 25]]
    argmax[5] = 25  # the target itself favours 25 there (sampling rejected it): not a negative
    assert rejected_proposals(tokens, 4, [chain], vocab, argmax).tolist() == []
