"""Online vocabulary remapping: cold rows go to frequent missing tokens, nothing else moves,
greedy output stays the target's own, and remapped drafts save and load like any other."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from borealis.wire import TraceStep
from tests.engine.helpers import greedy_request, run_all
from worker.draft.examples import build_example, for_vocab, head_rows
from worker.draft.io import load_draft, save_draft
from worker.draft.model import Eagle3Draft, new_draft
from worker.draft.remap import apply_remap, plan_remap
from worker.draft.runner import DraftRunner
from worker.draft.trainer import DraftTrainer, TrainConfig
from worker.draft.vocab import DraftVocab
from worker.engine.engine import EngineConfig, SpecConfig, SpecEngine
from worker.engine.llama import LlamaModel


def test_the_plan_gives_the_coldest_unused_rows_to_the_most_frequent_missing_tokens() -> None:
    vocab = DraftVocab(torch.arange(10), 100)
    usage = Counter({t: 100 - 10 * t for t in range(10)})  # token 9 coldest (10 uses), token 0 hottest
    usage[8], usage[7] = 1, 2
    recent = [[50] * 30 + [51] * 12 + [52] + [9, 0]]  # 9 is cold but used now: it keeps its row
    plan = plan_remap(vocab, recent, usage, max_rows=5)
    assert plan.new_tokens == [50, 51]  # 52 occurred once: below min_count
    assert plan.old_tokens == [8, 7]  # coldest first, 9 skipped (in use now)
    assert plan.rows == [8, 7]
    assert plan.coverage_before == pytest.approx(2 / 45) and plan.coverage_after == pytest.approx(44 / 45)
    assert plan_remap(vocab, [[50, 50]], Counter({t: 5 for t in range(10)}), 5).rows == []  # rows used more


@pytest.fixture(scope="module")
def target(tiny_model_dir: Path) -> LlamaModel:
    return LlamaModel.load(tiny_model_dir)


def draft_of(target: LlamaModel) -> Eagle3Draft:
    return new_draft(target.spec, DraftVocab(torch.arange(0, 512), target.spec.vocab_size), seed=2)


def test_applying_moves_only_the_remapped_rows_and_their_moments(target: LlamaModel, tmp_path: Path) -> None:
    draft = draft_of(target)
    trainer = DraftTrainer(draft, target.embed, TrainConfig(batch_tokens=512))
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 512, (40,), generator=generator).tolist()
    trainer.train_step([build_example(target, draft.vocab, tokens, 8, "code")])  # moments exist now
    before = {name: p.detach().clone() for name, p in draft.named_parameters()}
    plan = plan_remap(draft.vocab, [[1500] * 4 + [1600] * 3], Counter(), max_rows=2)
    apply_remap(draft, plan, target, trainer.optimizer)
    rows = torch.tensor(plan.rows)
    assert draft.vocab.draft_to_target[rows].tolist() == [1500, 1600]
    assert (
        int(draft.vocab.target_to_draft[1500]) == plan.rows[0]
        and int(draft.vocab.target_to_draft[plan.old_tokens[0]]) == -1
    )
    keep = torch.ones(512, dtype=torch.bool)
    keep[rows] = False
    assert torch.equal(draft.lm_head[keep], before["lm_head"][keep])
    assert not torch.equal(draft.lm_head[rows], before["lm_head"][rows])
    assert all(torch.equal(p, before[n]) for n, p in draft.named_parameters() if n != "lm_head")
    state = trainer.optimizer.state[draft.lm_head]
    assert state["exp_avg"][rows].abs().sum() == 0 and state["exp_avg"][keep].abs().sum() > 0
    trainer.train_step([build_example(target, draft.vocab, [*tokens, 1500, 1600], 8, "code")])  # trains on
    save_draft(draft, tmp_path / "remapped")
    loaded, _ = load_draft(tmp_path / "remapped")
    assert loaded.vocab.same_as(draft.vocab)  # unsorted ids round-trip


def test_the_weight_average_takes_the_remapped_rows_and_vocabulary(target: LlamaModel) -> None:
    trainer = DraftTrainer(draft_of(target), target.embed, TrainConfig(batch_tokens=512, average=0.9))
    draft, average = trainer.draft, trainer.candidate()
    tokens = torch.randint(0, 512, (40,), generator=torch.Generator().manual_seed(0)).tolist()
    for _ in range(2):
        trainer.train_step([build_example(target, draft.vocab, tokens, 8, "code")])
    untouched = average.lm_head.detach().clone()
    plan = plan_remap(draft.vocab, [[1500] * 4 + [1600] * 3], Counter(), max_rows=2)
    trainer.remap(plan, target)
    rows = torch.tensor(plan.rows)
    assert average.vocab.same_as(draft.vocab)
    assert torch.equal(average.lm_head[rows], draft.lm_head[rows])
    kept = torch.ones(len(untouched), dtype=torch.bool)
    kept[rows] = False
    assert torch.equal(average.lm_head[kept], untouched[kept])  # every other row keeps its average


def test_greedy_output_with_a_remapped_draft_is_the_targets_own(target: LlamaModel) -> None:
    draft = draft_of(target)
    apply_remap(draft, plan_remap(draft.vocab, [[700] * 5 + [800] * 5], Counter(), 64), target)
    generator = torch.Generator().manual_seed(3)
    prompts = [torch.randint(0, 1000, (10,), generator=generator).tolist() for _ in range(4)]
    requests = [greedy_request(f"r{i}", prompt, 20) for i, prompt in enumerate(prompts)]
    config = EngineConfig(max_batch=4, max_seq_len=128, spec=SpecConfig(mode="off"))
    spec = EngineConfig(max_batch=4, max_seq_len=128, spec=SpecConfig(mode="tree", adaptive=False))
    plain, _ = run_all(SpecEngine(target, config), requests)
    speculative = SpecEngine(target, spec)
    speculative.swap_draft(DraftRunner(draft, target.embed, "remapped"))
    assert run_all(speculative, requests)[0] == plain


def test_an_example_carried_to_a_remapped_vocabulary_equals_one_built_for_it(target: LlamaModel) -> None:
    old = DraftVocab(torch.arange(0, 512), target.spec.vocab_size)
    ids = old.draft_to_target.clone()
    ids[[5, 7]] = torch.tensor([1500, 1600])  # tokens 5 and 7 leave, 1500 and 1600 enter
    new = DraftVocab(ids, target.spec.vocab_size)
    tokens = [*range(100, 112), 300, 301, 302, 303]
    # after output[0] (token 300): 301 accepted; 5, 9 and 1600 rejected beside it, 7 below 301
    step = TraceStep(
        position=1,
        proposed=[301, 5, 9, 1600, 7],
        draft_probs=[0.5] * 5,
        parents=[-1, -1, -1, -1, 0],
        accepted=1,
    )
    built_old = build_example(target, old, tokens, 12, "code", [step])
    carried = for_vocab(built_old, new, head_rows(target, new.draft_to_target))
    built_new = build_example(target, new, tokens, 12, "code", [step])
    assert carried.vocab is new and for_vocab(carried, new, torch.empty(0)) is carried
    # the kept hidden state is float16 (as shipped features are): near-ties lower in the top-k may swap
    assert torch.equal(carried.target_ids[:, 0], built_new.target_ids[:, 0])
    torch.testing.assert_close(carried.target_logp[:, 0], built_new.target_logp[:, 0], atol=2e-2, rtol=0)
    assert torch.equal(carried.target_argmax, built_new.target_argmax)
    assert torch.equal(carried.features, built_new.features) and torch.equal(carried.hidden, built_new.hidden)
    # 5 and 7 left the vocabulary; 9 kept its row; 1600 was outside it when the example was built
    assert sorted(built_old.negatives[:, 2].tolist()) == [5, 7, 9]
    assert carried.negatives.tolist() == [[0, 11, 9]]  # unroll step 0, predicted at row 11
    assert sorted(built_new.negatives[:, 2].tolist()) == sorted([9, int(new.target_to_draft[1600])])
