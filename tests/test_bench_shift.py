"""`borealis bench shift` arithmetic: windows, both taus, paired intervals, the keys a run reports."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch

from borealis.processes import cpu_seconds
from tests.json_server import json_server
from worker.bench.clients import Outcome, prompt_request
from worker.bench.shift import (
    ArmRun,
    Block,
    Served,
    acceptance_length,
    parse_args,
    phase_prompts,
    recovery_requests,
    repeated_requests,
    serve,
    summarize,
    summarize_blocks,
    window_slices,
)
from worker.bench.shift_eval import (
    DraftScorer,
    EvalTrace,
    no_draft_counts,
    paired_ratio_interval,
    pooled_interval,
    score_versions,
)
from worker.draft.examples import build_example
from worker.draft.io import save_draft
from worker.draft.model import new_draft
from worker.draft.shadow import per_trace_counts
from worker.draft.vocab import DraftVocab
from worker.engine.llama import LlamaModel
from worker.workloads import Prompt, build_prompts


def served(index: int, phase: str, steps: int, accepted: int) -> Served:
    spec = {"num_steps": steps, "num_accepted_tokens": accepted}
    outcome = Outcome(index, 0, float(index), float(index) + 1.0, "200", steps + accepted, spec)
    return Served(outcome, phase)


def test_served_tau_is_emitted_tokens_per_target_step_over_requests() -> None:
    assert acceptance_length([served(0, "code", 10, 10), served(1, "code", 30, 0)]) == (40 + 10) / 40
    assert acceptance_length([]) is None


def test_windows_never_straddle_a_phase_boundary() -> None:
    prompt = Prompt("code", "k", "x", chat=False)
    items = [("chat", prompt)] * 5 + [("prose", prompt)] * 3
    assert window_slices(items, 4) == [slice(0, 4), slice(4, 5), slice(5, 8)]


def test_recovery_counts_requests_until_within_ten_percent_of_the_pre_shift_level() -> None:
    series = [
        {"phase": "code", "requests": 4, "mean_acceptance_length": 2.0},
        {"phase": "prose", "requests": 6, "mean_acceptance_length": 1.0},
        {"phase": "prose", "requests": 8, "mean_acceptance_length": 1.5},
        {"phase": "prose", "requests": 10, "mean_acceptance_length": 1.9},
    ]
    assert recovery_requests(series, ["code", "prose"]) == {"code->prose": 6}
    assert recovery_requests(series[:3], ["code", "prose"]) == {"code->prose": None}


def test_phases_serve_distinct_prompts_and_never_the_reserved_ones() -> None:
    items, reserved = phase_prompts(["chat", "humaneval", "prose"], [32, 64, 64], 8)
    assert [phase for phase, _ in items] == ["chat"] * 32 + ["humaneval"] * 64 + ["prose"] * 64
    for start, stop in ((0, 32), (32, 96), (96, 160)):
        assert len({p.key for _, p in items[start:stop]}) == stop - start
    assert repeated_requests(items) == {"chat": 0, "humaneval": 0, "prose": 0}
    longer, _ = phase_prompts(["chat", "humaneval"], [8, 200], 8)  # HumanEval: 164 problems, 8 reserved
    assert repeated_requests(longer) == {"chat": 0, "humaneval": 200 - 156}
    served_keys = {p.key for _, p in items}
    assert all(len(prompts) == 8 for prompts in reserved.values())
    assert not served_keys & {p.key for prompts in reserved.values() for p in prompts}
    assert not {p.key for p in build_prompts("chat", "train")} & served_keys  # the static draft's data
    assert {p.domain for _, p in items if _ == "humaneval"} == {"code"}


def test_the_paired_ratio_interval_separates_a_better_arm_and_covers_one_for_an_equal_one() -> None:
    rng = np.random.default_rng(1)
    steps = rng.integers(20, 60, size=(2, 30))
    base = [np.stack([s * 2, s], axis=1) for s in steps]  # tau 2 on every item
    better = [np.stack([s * 2 + s // 2, s], axis=1) for s in steps]  # tau 2.5
    low, high = paired_ratio_interval(better, base) or (0.0, 0.0)
    assert 1.2 < low <= high < 1.26  # tau 2.5 less the floor of odd halves, against 2: well above 1
    noisy = [np.stack([s * 2 + rng.integers(-3, 4, size=len(s)), s], axis=1) for s in steps]
    low, high = paired_ratio_interval(noisy, base) or (0.0, 0.0)
    assert low < 1.0 < high
    assert paired_ratio_interval([], []) is None
    assert pooled_interval([(3, 2)]) is None  # one row: no band


@pytest.fixture(scope="module")
def scorer(tiny_model_dir: Path) -> DraftScorer:
    target = LlamaModel.load(tiny_model_dir)
    rng = np.random.default_rng(0)
    traces = [
        EvalTrace(
            phase, Prompt("code", f"{phase}-{i}", "x", chat=False), rng.integers(0, 2000, 40).tolist(), 12
        )
        for phase in ("code", "prose")
        for i in range(3)
    ]
    return DraftScorer(target, traces, depth=3)


def test_drafts_fetched_from_a_registry_are_scored_trace_by_trace(
    scorer: DraftScorer, tmp_path: Path
) -> None:
    spec = scorer.target.spec
    vocab = DraftVocab.from_counts(
        Counter({t: spec.vocab_size - t for t in range(spec.vocab_size)}), 256, spec.vocab_size
    )
    save_draft(new_draft(spec, vocab, seed=1), tmp_path / "stored")

    def fetch(version: str, directory: Path) -> None:
        assert version == "v0001"
        shutil.copytree(tmp_path / "stored", directory, dirs_exist_ok=True)

    (counts,) = score_versions(scorer, {"v0001"}, fetch).values()
    assert len(counts) == len(scorer.traces)
    assert all(emitted >= steps > 0 for emitted, steps in counts)  # a step emits at least its own token
    assert no_draft_counts(scorer) == [(27, 27)] * 6  # 40 tokens, 12 prompt: 27 steps of one token


def test_one_prefill_per_trace_scores_drafts_of_any_vocabulary_as_their_own_would(
    scorer: DraftScorer,
) -> None:
    """The scorer builds its examples once, for the first draft's vocabulary, and scores every later
    one on them: what a score reads of an example is what each draft's own examples hold, and the
    counts are equal."""
    spec = scorer.target.spec
    drafts = [
        new_draft(
            spec,
            DraftVocab.from_counts(
                Counter({t: (t * 7919 + seed) % 997 for t in range(spec.vocab_size)}), 256, spec.vocab_size
            ),
            seed=seed,
        )
        for seed in (3, 4)
    ]
    assert not drafts[0].vocab.same_as(drafts[1].vocab)
    for draft in drafts:
        counts = scorer.score(draft)
        shared = scorer._examples_for(draft.vocab)
        own = [
            build_example(scorer.target, draft.vocab, t.ids, t.prompt_len, t.prompt.domain)
            for t in scorer.traces
        ]
        for a, b in zip(shared, own, strict=True):
            assert a.prompt_len == b.prompt_len
            for name in ("tokens", "features", "target_argmax"):
                assert torch.equal(getattr(a, name), getattr(b, name)), name
        assert counts == per_trace_counts(draft, scorer.target.embed, own, scorer.depth)


def test_summary_reports_the_issue_keys_from_both_taus(scorer: DraftScorer) -> None:
    prompt = Prompt("code", "k", "x", chat=False)
    items = [("code", prompt)] * 4 + [("prose", prompt)] * 4
    args = argparse.Namespace(
        phases=["code", "prose"],
        window=2,
        requests_per_phase=4,
        phase_requests=[4, 4],
        trainer="dedicated",
        train_steps_per_request=1.0,
    )
    good = [(27 * 2, 27)] * 6  # draft tau 2 on every reserved trace
    fair = [(27 * 3 // 2, 27)] * 6
    static = ArmRun(
        served=[served(i, p, 10, 5) for i, (p, _) in enumerate(items)],
        checkpoints=["v0001"] * 4,
        draft_counts={"v0001": fair},
    )
    online = ArmRun(
        served=[served(i, p, 10, 5 if i < 6 else 10) for i, (p, _) in enumerate(items)],
        checkpoints=["v0001", "v0001", "v0001", "v0002"],
        promoted_after_window=[3],
        draft_counts={"v0001": fair, "v0002": good},
    )
    scratch = ArmRun(
        served=[served(i, p, 10, 0) for i, (p, _) in enumerate(items)],
        checkpoints=[None, "v0001", "v0002", "v0002"],
        draft_counts={"v0001": fair, "v0002": good},
    )
    summary = summarize(args, items, {"static": static, "online": online, "scratch": scratch}, scorer)
    assert summary["trainer_mode"] == "dedicated" and summary["train_steps_per_request"] == 1.0
    # shifted phase (prose): windows 2 and 3; online's draft is fair then good, static's fair twice
    assert summary["online_over_static_draft_tau_shifted"] == pytest.approx(
        (40 / 27 + 2) / 2 / (40 / 27), abs=1e-3
    )
    assert summary["online_over_static_served_tau_shifted"] == pytest.approx(
        (2 * 1.5 + 2 * 2.0) / 4 / 1.5, abs=1e-3
    )
    low, high = summary["online_over_static_draft_tau_shifted_ci95"]
    assert low <= summary["online_over_static_draft_tau_shifted"] <= high
    assert (
        summary["scratch_reaches_static_draft_tau_after_requests"] == 4
    )  # window 1: v0001, as good as static
    assert summary["old_domain_draft_tau_drop"] == pytest.approx(
        40 / 27 - 2, abs=1e-3
    )  # it improved: negative
    windows = summary["arms"]["online"]["windows"]
    assert [w["promoted"] for w in windows] == [False, False, False, True]
    assert summary["arms"]["scratch"]["windows"][0]["draft_tau"] == 1.0  # no draft yet: one token per step


def test_the_trainer_environment_follows_the_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.bench.shift import bench_env, parse_args

    monkeypatch.delenv("BOREALIS_TRAINER_THREADS", raising=False)

    dedicated = bench_env(
        parse_args(["--json", "x.json", "--train-steps-per-request", "2", "--heldout-fraction", "0.25"])
    )
    assert (
        dedicated["BOREALIS_TRAINER_STEPS_PER_TRACE"] == "2.0"
        and dedicated["BOREALIS_TRAINER_DUTY_CYCLE"] == "1.0"
    )
    assert dedicated["BOREALIS_TRAINER_CANDIDATE_EVERY_ROUNDS"] == "1"
    assert dedicated["BOREALIS_TRAINER_HELDOUT_FRACTION"] == "0.25"
    assert dedicated["BOREALIS_TRAINER_JUDGE_MAX_TRACES"] == "64"  # overrides the co-located 24
    assert dedicated["BOREALIS_TRAINER_THREADS"] == "0"  # every thread: overrides the co-located one
    colocated = bench_env(parse_args(["--json", "x.json", "--trainer", "colocated"]))
    assert (
        "BOREALIS_TRAINER_STEPS_PER_TRACE" not in colocated
        and "BOREALIS_TRAINER_HELDOUT_FRACTION" not in colocated
        and "BOREALIS_TRAINER_JUDGE_MAX_TRACES" not in colocated  # `borealis up`'s: the appliance's default
        and "BOREALIS_TRAINER_THREADS" not in colocated
    )


def test_sampled_requests_carry_the_temperature_and_a_seed_per_request() -> None:
    chat, code = Prompt("chat", "c", "hi", chat=True), Prompt("code", "k", "def f():", chat=False)
    greedy = prompt_request("m", code, 16)
    assert greedy.path == "/v1/completions" and greedy.body["temperature"] == 0
    assert "seed" not in greedy.body
    sampled = prompt_request("m", chat, 16, temperature=0.7, seed=41)
    assert sampled.path == "/v1/chat/completions"
    assert (sampled.body["temperature"], sampled.body["seed"]) == (0.7, 41)
    assert parse_args(["--temperature", "0.7", "--json", "x.json"]).temperature == 0.7


def test_throughput_blocks_report_each_mode_each_pair_and_each_process_share() -> None:
    cpu = {"inference-worker": 1.8, "training-worker": 0.0}
    learning = {"inference-worker": 1.6, "training-worker": 0.4}
    blocks = [  # paused first in the first pair, on first in the second
        Block(True, 100, 2.0, cpu, (0.02, 0.03, 0.04)),
        Block(False, 90, 2.0, learning, (0.03, 0.05)),
        Block(False, 80, 2.0, learning, (0.04, 0.06)),
        Block(True, 100, 2.0, cpu, (0.01, 0.05)),
    ]
    summary = summarize_blocks(blocks)
    assert summary["serving_tok_s_learning_paused"] == 50.0 and summary["serving_tok_s_learning_on"] == 42.5
    assert summary["learning_on_over_paused"] == 0.85
    assert summary["learning_on_over_paused_per_pair"] == [0.9, 0.8]
    assert summary["cpu_share_learning_on"] == {"inference-worker": 0.8, "training-worker": 0.2}
    assert summary["cpu_share_learning_paused"] == {"inference-worker": 0.9, "training-worker": 0.0}
    assert summary["request_seconds_per_token_learning_paused"] == 0.03  # the median request of each mode
    assert summary["request_seconds_per_token_learning_on"] == 0.045
    assert summary["request_seconds_per_token_on_over_paused"] == 1.5


def test_a_process_cpu_seconds_grow_with_its_work_and_a_gone_one_reads_zero() -> None:
    before = cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    assert cpu_seconds(os.getpid()) - before >= 0.2  # clock ticks of 10 ms
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    assert cpu_seconds(child.pid) == 0.0


def test_clients_pause_their_think_time_after_each_reply() -> None:
    """The arms' traffic can leave the cores idle the way users reading answers do."""
    arrivals: list[float] = []

    def completion(_method: str, _path: str) -> tuple[int, object]:
        arrivals.append(time.monotonic())
        return 200, {"usage": {"completion_tokens": 3}, "spec_decode": {"num_steps": 3}}

    with json_server(completion) as url:
        args = parse_args(["--concurrency", "1", "--think-seconds", "0.3", "--json", "x.json"])
        items = [("code", Prompt("code", str(i), "def f():", chat=False)) for i in range(3)]
        served = serve(url, "m", items, args, think_s=args.think_seconds)
        assert [s.outcome.completion_tokens for s in served] == [3, 3, 3]
        assert all(later - earlier >= 0.3 for earlier, later in pairwise(arrivals))
        arrivals.clear()
        serve(url, "m", items, args)  # the throughput blocks: back to back
        assert all(later - earlier < 0.3 for earlier, later in pairwise(arrivals))
    for flag in ("--think-seconds", "--block-think-seconds"):
        with pytest.raises(SystemExit):
            parse_args([flag, "-1", "--json", "x.json"])
