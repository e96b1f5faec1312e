"""Training raises simulated acceptance on held-out data; the rejected-proposal term does its job."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from worker.draft.examples import Example, build_example, example_from_features
from worker.draft.generate import greedy_continuations, greedy_outputs
from worker.draft.io import load_draft, save_draft
from worker.draft.model import initialise_from_target, new_draft
from worker.draft.shadow import simulated_acceptance
from worker.draft.train import OFFLINE_AVERAGE, main
from worker.draft.trainer import DraftTrainer, TrainConfig, batches, collate, length_groups
from worker.draft.ttt import unroll
from worker.draft.vocab import DraftVocab
from worker.engine.llama import LlamaModel

FIELDS = ("tokens", "features", "target_ids", "target_logp", "target_argmax")


@pytest.fixture(scope="module")
def target(tiny_model_dir: Path) -> LlamaModel:
    torch.set_num_threads(2)
    return LlamaModel.load(tiny_model_dir)


@pytest.fixture(scope="module")
def data(target: LlamaModel) -> tuple[DraftVocab, list[Example]]:
    """The tiny target's greedy continuations of random prompts (its outputs are what a draft learns)."""
    generator = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 2000, (16,), generator=generator).tolist() for _ in range(80)]
    outputs = greedy_outputs(target, prompts, 48)
    sequences = [p + o for p, o in zip(prompts, outputs, strict=True)]
    vocab = DraftVocab.from_sequences(sequences, 512, target.spec.vocab_size)
    return vocab, [build_example(target, vocab, s, 16, "code") for s in sequences]


def test_generation_records_the_features_a_prefill_would_compute(target: LlamaModel) -> None:
    """`draft train` builds its examples from what generating read, without a second forward: the
    same outputs, and examples equal to a prefill's over every position the target read."""
    generator = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, 2000, (n,), generator=generator).tolist() for n in (9, 16, 12)]
    made = greedy_continuations(target, prompts, 20, batch=2, features=True)
    assert [c.output for c in made] == greedy_outputs(target, prompts, 20, batch=2)
    vocab = DraftVocab.from_sequences(
        [p + c.output for p, c in zip(prompts, made, strict=True)], 256, target.spec.vocab_size
    )
    for prompt, c in zip(prompts, made, strict=True):
        assert c.features is not None
        tokens = prompt + c.output
        assert c.features.shape == (len(tokens) - 1, 4 * target.spec.hidden_size)  # the last is never read
        recorded = example_from_features(target, vocab, tokens, c.features, len(prompt), "code")
        prefilled = build_example(target, vocab, tokens[: len(recorded)], len(prompt), "code")
        torch.testing.assert_close(recorded.features, prefilled.features, atol=2e-3, rtol=1e-2)
        assert torch.equal(recorded.target_argmax, prefilled.target_argmax)
        torch.testing.assert_close(recorded.target_logp, prefilled.target_logp, atol=2e-3, rtol=1e-2)
    assert all(c.features is None for c in greedy_continuations(target, prompts, 4))


def test_short_training_raises_held_out_acceptance(
    target: LlamaModel, data: tuple[DraftVocab, list[Example]]
) -> None:
    vocab, examples = data
    train, held_out = examples[:64], examples[64:]
    draft = new_draft(target.spec, vocab)
    before = simulated_acceptance(draft, target.embed, held_out, depth=4)
    trainer = DraftTrainer(draft, target.embed, TrainConfig(lr=3e-3, batch_tokens=1024))
    groups = batches(train, 1024)
    first = trainer.train_step(groups[0])
    for i in range(1, 120):
        last = trainer.train_step(groups[i % len(groups)])
    after = simulated_acceptance(draft, target.embed, held_out, depth=4)
    assert last.loss < 0.6 * first.loss
    assert after["all"] >= before["all"] + 0.05, (before, after)
    assert simulated_acceptance(draft, target.embed, train, depth=4)["all"] > after["all"]


ROW_CHOICES = [(True, True), (False, True), (True, False)]  # (prompt_rows, uncovered_rows)


@pytest.mark.parametrize(("prompt_rows", "uncovered_rows"), ROW_CHOICES)
def test_the_loss_is_the_decayed_kl_over_every_row_that_trains_and_no_other(
    target: LlamaModel, data: tuple[DraftVocab, list[Example]], prompt_rows: bool, uncovered_rows: bool
) -> None:
    """The packed, log-sum-exp loss equals a plain full-softmax KL over the padded batch, masked: rows
    of padding, rows before their unroll step, (without prompt rows) rows before the one that
    predicts the first output token and (without uncovered rows) rows whose target argmax the draft
    vocabulary lacks change nothing."""
    vocab, examples = data
    short = Example(**{**examples[1].__dict__, **{k: getattr(examples[1], k)[:40] for k in FIELDS}})
    group = [examples[0], short]  # 64 and 40 tokens: the second is padded
    config = TrainConfig(ttt_steps=3, prompt_rows=prompt_rows, uncovered_rows=uncovered_rows)
    trainer = DraftTrainer(new_draft(target.spec, vocab, seed=2), target.embed, config)
    first = 0 if prompt_rows else examples[0].prompt_len - 1  # 15: both prompts are 16 tokens
    batch = collate(group)
    loss, metrics = trainer.loss(batch)
    with torch.no_grad():
        logits = unroll(trainer.draft, target.embed, batch.tokens, batch.features, 3)
    expected = torch.zeros(())
    for step, step_logits in enumerate(logits):
        logq = torch.log_softmax(step_logits[:, :-1], dim=-1).gather(-1, batch.target_ids[:, 1:])
        p = batch.target_logp[:, 1:].exp()
        rows = torch.arange(batch.tokens.shape[1] - 1).view(1, -1)
        valid = (rows >= step) & (rows >= first) & (rows < batch.lengths.view(-1, 1) - 1)
        if not uncovered_rows:
            held = vocab.target_to_draft[batch.target_argmax[:, 1:]] >= 0
            assert 0 < int((valid & ~held).sum()) < int(valid.sum())  # the case is exercised
            valid = valid & held
        kl = ((p * (batch.target_logp[:, 1:] - logq)).sum(-1) * valid).sum() / valid.sum()
        assert metrics.kl[step] == pytest.approx(float(kl), rel=1e-5)
        expected = expected + 0.8**step * kl
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize(("prompt_rows", "uncovered_rows"), ROW_CHOICES)
def test_a_step_in_parts_of_similar_length_has_the_gradient_of_the_whole_padded_batch(
    target: LlamaModel, data: tuple[DraftVocab, list[Example]], prompt_rows: bool, uncovered_rows: bool
) -> None:
    """Parts are divided by the whole step's row and rejected-proposal counts, so their gradients add
    up to the padded batch's, rejected term included."""
    vocab, examples = data

    def cut(example: Example, length: int, rejected: int) -> Example:
        kept = {k: getattr(example, k)[:length] for k in FIELDS}
        rows = torch.arange(2, 2 + rejected)
        negatives = torch.stack([rows % 3, rows, (example.target_ids[rows + 1, 0] + 1) % vocab.size], dim=1)
        return Example(**{**example.__dict__, **kept, "negatives": negatives})

    group = [cut(examples[0], 64, 6), cut(examples[1], 20, 0), cut(examples[2], 58, 3)]
    group.append(cut(examples[3], 12, 2))
    assert [len(part) for part in length_groups(group)] == [2, 1, 1]  # 64, 58 | 20 | 12
    config = TrainConfig(
        ttt_steps=3, rejected_weight=0.5, prompt_rows=prompt_rows, uncovered_rows=uncovered_rows
    )
    whole = DraftTrainer(new_draft(target.spec, vocab, seed=3), target.embed, config)
    loss, expected = whole.loss(collate(group))
    loss.backward()  # type: ignore[no-untyped-call]
    parted = DraftTrainer(new_draft(target.spec, vocab, seed=3), target.embed, config)
    metrics = parted.gradients(group)
    assert metrics.loss == pytest.approx(expected.loss, rel=1e-5)
    assert metrics.kl == pytest.approx(expected.kl, rel=1e-5) and metrics.top1 == pytest.approx(expected.top1)
    assert metrics.rejected_count == expected.rejected_count == 11
    assert metrics.rejected_loss == pytest.approx(expected.rejected_loss, rel=1e-5)
    for (name, a), b in zip(whole.draft.named_parameters(), parted.draft.parameters(), strict=True):
        assert a.grad is not None and b.grad is not None, name
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_rejected_term_widens_the_margin_it_targets(
    target: LlamaModel, data: tuple[DraftVocab, list[Example]]
) -> None:
    """On the same data and init, only the run with the term moves the rejected tokens down."""
    vocab, examples = data
    example = examples[0]
    rows = torch.arange(2, 30)
    wrong = (example.target_ids[rows + 1, 0] + 1) % vocab.size  # tokens the target did not choose
    negatives = torch.stack([torch.zeros_like(rows), rows, wrong], dim=1)
    example = Example(**{**example.__dict__, "negatives": negatives})
    losses = {}
    for weight in (0.0, 1.0):
        trainer = DraftTrainer(
            new_draft(target.spec, vocab), target.embed, TrainConfig(rejected_weight=weight)
        )
        for _ in range(8):
            trainer.train_step([example])
        _, metrics = trainer.loss(collate([example]))
        assert metrics.rejected_count == len(rows)
        losses[weight] = metrics.rejected_loss
    assert losses[1.0] < 0.5 * losses[0.0], losses


def test_offline_cli_writes_a_loadable_artifact(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "draft"
    argv = ["--workload", "code", "--minutes", "0.1", "--out", str(out), "--model", str(tiny_model_dir)]
    argv += ["--max-new-tokens", "16", "--draft-vocab", "256", "--eval-requests", "2", "--threads", "2"]
    assert main(argv) == 0
    draft, manifest = load_draft(out)
    training = manifest.extra["training"]
    assert isinstance(training, dict)
    assert training["optimizer_steps"] > 0 and training["train_tokens"] > 0
    assert set(training["simulated_acceptance"]) == {"all", "code"}
    assert training["train_config"]["average"] == OFFLINE_AVERAGE  # the saved draft is the weights' average
    assert draft.vocab.size == 256
    assert json.loads((out / "manifest.json").read_text())["extra"]["training"]["workload"] == "code"


def test_a_draft_can_start_from_the_targets_head_and_norm(
    target: LlamaModel, data: tuple[DraftVocab, list[Example]]
) -> None:
    vocab, _ = data
    draft = new_draft(target.spec, vocab)
    initialise_from_target(draft, target)
    torch.testing.assert_close(draft.lm_head, target.embed[vocab.draft_to_target])  # tied embeddings
    torch.testing.assert_close(draft.final_norm, target.norm)


def test_warmup_ramps_the_learning_rate_linearly(
    target: LlamaModel, data: tuple[DraftVocab, list[Example]]
) -> None:
    vocab, examples = data
    trainer = DraftTrainer(new_draft(target.spec, vocab), target.embed, TrainConfig(lr=1e-3, warmup_steps=4))
    rates = []
    for _ in range(6):
        trainer.train_step(examples[:2])
        rates.append(trainer.optimizer.param_groups[0]["lr"])
    assert rates == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])


def test_the_rate_may_decay_to_a_tenth_after_warmup(
    target: LlamaModel, data: tuple[DraftVocab, list[Example]]
) -> None:
    vocab, examples = data
    config = TrainConfig(lr=1e-3, warmup_steps=2, decay_steps=5)
    trainer = DraftTrainer(new_draft(target.spec, vocab), target.embed, config)
    rates = []
    for _ in range(7):
        trainer.train_step(examples[:2])
        rates.append(trainer.optimizer.param_groups[0]["lr"])
    assert rates == pytest.approx([5e-4, 1e-3, 7e-4, 4e-4, 1e-4, 1e-4, 1e-4])
    at_once = TrainConfig(lr=1e-3, decay_steps=1)
    degenerate = DraftTrainer(new_draft(target.spec, vocab), target.embed, at_once)
    degenerate.train_step(examples[:2])  # a decay that ends where it starts: no decay, no division by zero
    assert degenerate.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)


def test_candidates_are_the_moving_average_of_the_weights_when_asked(
    target: LlamaModel, data: tuple[DraftVocab, list[Example]]
) -> None:
    vocab, examples = data
    plain = DraftTrainer(new_draft(target.spec, vocab), target.embed, TrainConfig(lr=3e-3))
    averaging = DraftTrainer(new_draft(target.spec, vocab), target.embed, TrainConfig(lr=3e-3, average=0.5))
    expected = {name: p.detach().clone() for name, p in averaging.draft.named_parameters()}
    for step in range(3):
        plain.train_step(examples[:2])
        averaging.train_step(examples[:2])
        keep = min(0.5, (1 + step + 1) / (10 + step + 1))  # t counts the steps done, this one included
        for name, weight in averaging.draft.named_parameters():
            expected[name] = keep * expected[name] + (1 - keep) * weight.detach()
    assert plain.candidate() is plain.draft  # no average kept: the weights as they stand
    candidate = averaging.candidate()
    assert candidate is not averaging.draft and not candidate.fc.requires_grad
    for name, mean in candidate.named_parameters():
        assert torch.allclose(mean, expected[name], atol=1e-6), name
        assert not torch.equal(mean, dict(averaging.draft.named_parameters())[name]), name
    assert torch.equal(plain.draft.fc, averaging.draft.fc)  # the average never feeds back into training


def test_bf16_is_refused_where_the_cpu_would_emulate_it() -> None:
    from borealis.cpu import bf16_native
    from worker.draft.train import parse_args

    argv = ["--minutes", "1", "--out", "x", "--bf16"]
    if bf16_native():
        assert parse_args(argv).bf16
    else:
        with pytest.raises(SystemExit):
            parse_args(argv)
    assert parse_args(argv[:-1]).bf16 == bf16_native()  # by default as the online trainer does
    assert parse_args([*argv[:-1], "--no-bf16"]).bf16 is False


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (`make test-gpu`)")
def test_the_draft_trains_on_cuda_as_on_cpu_and_snapshots_to_cpu(
    target: LlamaModel, data: tuple[DraftVocab, list[Example]], tmp_path: Path
) -> None:
    vocab, examples = data
    groups = batches(examples[:64], 1024)
    config = TrainConfig(lr=3e-3, batch_tokens=1024)
    on_cpu = DraftTrainer(new_draft(target.spec, vocab), target.embed, config)
    on_gpu = DraftTrainer(new_draft(target.spec, vocab), target.embed, replace(config, device="cuda"))
    assert next(on_gpu.draft.parameters()).device.type == "cuda"
    first_cpu, first_gpu, last = _first_and_last_losses(on_cpu, on_gpu, groups)
    assert first_gpu == pytest.approx(first_cpu, rel=1e-3)
    assert last < 0.6 * first_gpu
    snapshot = on_gpu.snapshot()
    for (name, kept), (_, trained) in zip(
        snapshot.named_parameters(), on_gpu.draft.named_parameters(), strict=True
    ):
        assert kept.device.type == "cpu" and torch.equal(kept, trained.cpu()), name
    save_draft(snapshot, tmp_path / "draft", version="v-gpu")
    held_out = examples[64:]
    saved = simulated_acceptance(load_draft(tmp_path / "draft")[0], target.embed, held_out, depth=4)
    assert saved == simulated_acceptance(snapshot, target.embed, held_out, depth=4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (`make test-gpu`)")
def test_the_draft_trains_on_cuda_under_bf16_autocast_as_a_gpu_trainer_does(
    target: LlamaModel, data: tuple[DraftVocab, list[Example]]
) -> None:
    """A GPU training worker autocasts to bf16 by default: the loss starts where fp32's does (bf16
    rounding aside), falls as fast, and the snapshot a worker publishes stays fp32 on the CPU."""
    vocab, examples = data
    groups = batches(examples[:64], 1024)
    config = TrainConfig(lr=3e-3, batch_tokens=1024, device="cuda")
    exact = DraftTrainer(new_draft(target.spec, vocab), target.embed, config)
    autocast = DraftTrainer(new_draft(target.spec, vocab), target.embed, replace(config, bf16=True))
    first_exact, first, last = _first_and_last_losses(exact, autocast, groups)
    assert first == pytest.approx(first_exact, rel=2e-2)
    assert last < 0.6 * first
    snapshot = autocast.snapshot()
    assert {(p.device.type, p.dtype) for p in snapshot.parameters()} == {("cpu", torch.float32)}
    held_out = examples[64:]
    untrained = simulated_acceptance(new_draft(target.spec, vocab), target.embed, held_out, depth=4)
    assert simulated_acceptance(snapshot, target.embed, held_out, depth=4)["all"] > untrained["all"]


def _first_and_last_losses(
    reference: DraftTrainer, trainer: DraftTrainer, groups: list[list[Example]]
) -> tuple[float, float, float]:
    """Both trainers' first-step losses on the same batch, then ``trainer``'s after 119 more steps."""
    first_reference, first = reference.train_step(groups[0]).loss, trainer.train_step(groups[0]).loss
    for i in range(1, 120):
        last = trainer.train_step(groups[i % len(groups)]).loss
    return first_reference, first, last


def test_on_cpu_the_snapshot_is_the_draft_itself(
    target: LlamaModel, data: tuple[DraftVocab, list[Example]]
) -> None:
    trainer = DraftTrainer(new_draft(target.spec, data[0]), target.embed, TrainConfig())
    assert trainer.snapshot() is trainer.draft and trainer.device.type == "cpu"


def test_the_online_recipe_follows_the_trainer_settings() -> None:
    from borealis.settings import Settings

    settings = Settings(
        trainer_lr=2e-4,
        trainer_warmup_steps=7,
        trainer_batch_tokens=512,
        trainer_device="cpu",
        trainer_weight_average=0.8,
    )
    config = TrainConfig.online(settings.trainer)
    recipe = (config.lr, config.warmup_steps, config.batch_tokens, config.device, config.average)
    assert recipe == (2e-4, 7, 512, "cpu", 0.8)
