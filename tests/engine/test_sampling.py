"""Speculative sampling must leave the target's output distribution unchanged."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable

import pytest
import torch
from transformers import LlamaForCausalLM

from tests.engine.helpers import random_runner, run_all
from tests.engine.stats_util import chi_square_ok
from worker.engine.engine import EngineConfig, SpecConfig, SpecEngine
from worker.engine.llama import LlamaModel
from worker.engine.sampling import target_probs
from worker.engine.tree import ProposalTree
from worker.engine.types import GenerationRequest, SamplingParams
from worker.engine.verify import DraftSample, verify_tree


def test_top_p_keeps_the_smallest_nucleus() -> None:
    probs = target_probs(torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05])), SamplingParams(1, 1.0, top_p=0.7))
    torch.testing.assert_close(probs, torch.tensor([0.625, 0.375, 0.0, 0.0]))


def test_tree_rejection_sampling_is_lossless() -> None:
    """Several proposed children (some likely, some not) and a second level: joint law of two tokens."""
    torch.manual_seed(0)
    vocab = 6
    logits = torch.randn(5, vocab) * 1.5
    tree = ProposalTree.root(0)
    a = tree.add(0, 2)
    b = tree.add(0, 4)
    tree.add(a, 1)
    tree.add(b, 3)
    params = SamplingParams(max_new_tokens=4, temperature=0.8)
    p_root = target_probs(logits[0], params)
    generator = torch.Generator().manual_seed(1)
    seen: Counter[Hashable] = Counter()
    for _ in range(20_000):
        verdict = verify_tree(tree, logits, params, generator)
        emitted = [tree.tokens[n] for n in verdict.accepted] + [verdict.next_token]
        seen[tuple(emitted[:2])] += 1
    expected: dict[Hashable, float] = {}
    for first in range(vocab):
        node = tree.children[0].get(first)
        for second in range(vocab):
            if node is None:  # emitted as the bonus token: nothing follows in this step
                expected[(first,)] = float(p_root[first])
                break
            p_next = target_probs(logits[node], params)
            expected[(first, second)] = float(p_root[first] * p_next[second])
    assert chi_square_ok(seen, expected)


def draws_without_replacement(q: torch.Tensor, k: int, generator: torch.Generator) -> list[int]:
    """k draft ids drawn without replacement from q, in draw order (Gumbel top-k)."""
    gumbel = -torch.log(-torch.log(torch.rand(q.shape, generator=generator).clamp_(min=1e-20)))
    return [int(i) for i in (q.log() + gumbel).topk(k).indices]


@pytest.mark.parametrize(
    ("draws", "kept", "guess"),
    [
        (1, 1, None),  # a draft chain: standard speculative sampling, min(1, p/q) then max(0, p - q)
        (3, 3, None),  # three children drawn without replacement: recursive rejection sampling
        (3, 1, None),  # the tree kept one of three draws: all three are still verified
        (2, 2, 2),  # an n-gram guess beside the draws, sometimes the same token as a draw
    ],
)
def test_draft_sampled_children_keep_the_target_distribution(
    draws: int, kept: int, guess: int | None
) -> None:
    """The emitted token's law is p, draws fresh each trial as the engine makes them."""
    torch.manual_seed(3)
    vocab, d2t = 7, torch.tensor([0, 2, 3, 5, 6])
    logits = torch.randn(8, vocab) * 1.5
    q = torch.softmax(torch.randn(d2t.numel()) * 1.5, dim=-1)
    params = SamplingParams(max_new_tokens=4, temperature=0.9)
    p_root = target_probs(logits[0], params)
    generator = torch.Generator().manual_seed(4)
    seen: Counter[Hashable] = Counter()
    for _ in range(20_000):
        drawn = [int(d2t[i]) for i in draws_without_replacement(q, draws, generator)]
        tree = ProposalTree.root(0)
        guesses = {tree.add(0, guess)} if guess is not None else set()
        for token in drawn[:kept]:
            tree.add(0, token)
        samples = {0: DraftSample(drawn, q, d2t)}
        verdict = verify_tree(tree, logits, params, generator, samples, guesses)
        first = tree.tokens[verdict.accepted[0]] if verdict.accepted else verdict.next_token
        seen[first] += 1
    assert chi_square_ok(seen, {token: float(p_root[token]) for token in range(vocab)})


def test_a_draft_that_equals_the_target_is_always_accepted() -> None:
    """min(1, p/q) = 1 when q = p: the point-mass rule would accept only sum(p^2) on average."""
    logits = torch.randn(2, 5)
    params = SamplingParams(max_new_tokens=4, temperature=1.0)
    d2t = torch.arange(5)
    q = target_probs(logits[0], params)
    generator = torch.Generator().manual_seed(0)
    for token in range(5):
        tree = ProposalTree.root(0)
        child = tree.add(0, token)
        verdict = verify_tree(tree, logits, params, generator, {0: DraftSample([token], q, d2t)})
        assert verdict.accepted == [child]


def test_greedy_verification_follows_argmax() -> None:
    logits = torch.full((4, 5), -5.0)
    logits[0, 3] = logits[1, 0] = logits[2, 2] = logits[3, 4] = 5.0
    tree = ProposalTree.root(0)
    first = tree.add(0, 1)  # wrong guess
    second = tree.add(0, 3)  # right guess
    third = tree.add(second, 2)  # right again
    verdict = verify_tree(tree, logits, SamplingParams(4), None)
    assert first == 1 and verdict.accepted == [second, third]
    assert verdict.next_token == 4


def test_engine_sampling_matches_target_distribution(
    tiny_hf: LlamaForCausalLM, tiny_model: LlamaModel
) -> None:
    """Joint law of the first two sampled tokens (the second passes through tree verification)."""
    prompt = [5, 9, 14, 5, 9, 14, 5, 9]
    params = SamplingParams(max_new_tokens=3, temperature=1.3, top_p=0.95)
    with torch.no_grad():
        p_first = target_probs(tiny_hf(torch.tensor([prompt])).logits[0, -1], params)
        grid = torch.tensor([[*prompt, t] for t in range(96)])
        p_second = target_probs(tiny_hf(grid).logits[:, -1], params)
    expected: dict[Hashable, float] = {
        (x, y): float(p_first[x] * p_second[x, y]) for x in range(96) for y in range(96)
    }
    spec = SpecConfig(mode="tree", adaptive=False, max_draft_depth=2, tree_topk=4, tree_width=2)
    config = EngineConfig(max_batch=8, max_seq_len=64, spec=spec)
    engine = SpecEngine(tiny_model, config, random_runner(tiny_model, 48))
    requests = [GenerationRequest(f"r{i}", prompt, SamplingParams(3, 1.3, 0.95, seed=i)) for i in range(2500)]
    outputs, stats = run_all(engine, requests)
    seen: Counter[Hashable] = Counter(tuple(tokens[:2]) for tokens in outputs.values())
    assert sum(s.num_accepted_tokens for s in stats.values()) > 100  # speculation really took part
    assert chi_square_ok(seen, expected)
