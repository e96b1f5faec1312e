"""``borealis bench ablation``: which learning recipe makes the better draft? Same traces, same batches.

Serves the workload's train split through the speculative engine with the starting draft (an
artifact, or a day-0 draft whose vocabulary comes from the train split), so the traces carry real
accepted and rejected proposals; then trains one copy of the starting draft per arm, on the same
batches in the same order, and reports simulated chain acceptance on the test split, per domain, at
each of ``--eval-at`` optimizer steps. ``--also-eval W`` adds another workload's test prompts to the
held-out set: started from a draft trained on ``W``, that measures forgetting of the old domain while
the arms learn the new one. Every arm after the first gets the paired 95 % bootstrap interval of its
per-trace difference from the first arm at the last step, per domain (same traces for both).

An arm is ``NAME`` or ``NAME:key=value,key=value`` over the recipe's knobs: ``lr``,
``warmup_steps``, ``decay_steps``, ``average``, ``ttt_steps``, ``step_decay``, ``rejected_weight``,
``batch_tokens``, ``bf16``, ``prompt_rows``, ``uncovered_rows`` (all
:class:`~worker.draft.trainer.TrainConfig` fields) and ``init=target`` (the draft's head from the
target's output embedding of the draft vocabulary, its final norm from the target's). Unset knobs
take the online trainer's defaults (``BOREALIS_TRAINER_*``), plus ``replay`` (the share of optimizer
steps that train on replayed traces of the ``--also-eval`` workload, served like the others, instead
of the new workload's: the online trainer's replay against forgetting) and ``traces`` (train on the
first N served traces only: how acceptance grows with the text that arrived).
Default arms: the rejected-proposal term off and on.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from borealis.settings import get_settings
from worker.bench.report import emit
from worker.bench.served_traces import serve_traces
from worker.draft.examples import Example, build_example
from worker.draft.generate import greedy_outputs
from worker.draft.io import load_draft
from worker.draft.model import Eagle3Draft, initialise_from_target, new_draft
from worker.draft.runner import DraftRunner
from worker.draft.shadow import paired_by_domain, per_trace_counts, pooled_acceptance, simulated_acceptance
from worker.draft.trainer import DraftTrainer, TrainConfig, batches
from worker.draft.vocab import DraftVocab
from worker.engine.llama import LlamaModel
from worker.engine.tracelog import wire_steps
from worker.workloads import Prompt, build_prompts, encode_prompt

DEFAULT_ARMS = ["without_rejected_term:rejected_weight=0", "with_rejected_term:rejected_weight=0.5"]
_FLOAT_KNOBS = {"lr", "average", "step_decay", "rejected_weight"}
_INT_KNOBS = {"warmup_steps", "decay_steps", "ttt_steps", "batch_tokens"}
_BOOL_KNOBS = {"bf16", "prompt_rows", "uncovered_rows"}


@dataclass(frozen=True)
class Arm:
    name: str
    config: TrainConfig
    init_from_target: bool
    replay: float = 0.0  # share of steps on the --also-eval workload's served traces
    traces: int | None = None  # train on the first N served traces only (None: all)


def parse_arm(text: str, base: TrainConfig) -> Arm:
    name, _, knobs = text.partition(":")
    if not name:
        raise ValueError(f"arm {text!r} has no name")
    changes: dict[str, Any] = {}
    init_from_target = False
    replay = 0.0
    traces: int | None = None
    for knob in filter(None, knobs.split(",")):
        key, _, value = knob.partition("=")
        if key == "init" and value in ("target", "random"):
            init_from_target = value == "target"
        elif key == "replay" and 0.0 <= float(value) <= 1.0:
            replay = float(value)
        elif key == "traces" and value.isdigit() and int(value) > 0:
            traces = int(value)
        elif key in _FLOAT_KNOBS:
            changes[key] = float(value)
        elif key in _INT_KNOBS:
            changes[key] = int(value)
        elif key in _BOOL_KNOBS and value in ("true", "false"):
            changes[key] = value == "true"
        else:
            raise ValueError(f"unknown knob {knob!r} in arm {text!r}")
    return Arm(name, dataclasses.replace(base, **changes), init_from_target, replay, traces)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="borealis bench ablation", description=__doc__)
    parser.add_argument("--workload", choices=["code", "prose", "chat", "mixed"], default="code")
    parser.add_argument("--init", default="random", help="starting draft artifact, or 'random' (day-0)")
    parser.add_argument("--arm", action="append", dest="arms", help="NAME[:key=value,...]; repeatable")
    parser.add_argument("--requests", type=int, default=48, help="train-split requests served for traces")
    parser.add_argument("--eval-requests", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument(
        "--eval-at", default="100,300", help="optimizer steps at which every arm is evaluated"
    )
    parser.add_argument("--depth", type=int, default=4, help="simulated chain depth")
    parser.add_argument(
        "--also-eval",
        choices=["code", "prose", "chat", "mixed"],
        help="held-out prompts of a second workload too (forgetting of a domain the start draft knew)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    settings = get_settings().trainer
    base = TrainConfig.online(settings)
    try:
        args.arms = [parse_arm(text, base) for text in args.arms or DEFAULT_ARMS]
        args.eval_at = sorted({int(step) for step in args.eval_at.split(",")})
    except ValueError as exc:
        parser.error(str(exc))
    if len({arm.name for arm in args.arms}) != len(args.arms) or args.eval_at[0] < 1:
        parser.error("arm names must be distinct and --eval-at steps positive")
    if any(arm.replay for arm in args.arms) and not args.also_eval:
        parser.error("an arm with replay needs --also-eval (the workload it replays)")
    return args


def starting_draft(init: str, target: LlamaModel, train_ids: list[list[int]], seed: int) -> Eagle3Draft:
    if init == "random":
        vocab = DraftVocab.from_sequences(train_ids, get_settings().draft_vocab_size, target.spec.vocab_size)
        return new_draft(target.spec, vocab, seed=seed)
    draft, _ = load_draft(init)
    return draft


def train_arm(
    arm: Arm,
    start: Eagle3Draft,
    target: LlamaModel,
    examples: list[Example],
    replayed: list[Example],
    held_out: list[Example],
    eval_at: list[int],
    seed: int,
    depth: int,
) -> dict[str, Any]:
    draft = start.copy()
    if arm.init_from_target:
        initialise_from_target(draft, target)
    before = simulated_acceptance(draft, target.embed, held_out, depth)
    trainer = DraftTrainer(draft, target.embed, arm.config)
    trained = examples[: arm.traces]
    groups = batches(trained, arm.config.batch_tokens)
    random.Random(seed).shuffle(groups)
    replay_groups = batches(replayed, arm.config.batch_tokens) if arm.replay else []
    random.Random(seed + 1).shuffle(replay_groups)
    replay_draws = random.Random(seed + 2)
    curve: dict[str, dict[str, float]] = {}
    rejected_seen = 0
    started = time.monotonic()
    counts: list[tuple[int, int]] = []
    for step in range(1, eval_at[-1] + 1):
        if replay_groups and replay_draws.random() < arm.replay:
            group = replay_groups[(step - 1) % len(replay_groups)]
        else:
            group = groups[(step - 1) % len(groups)]
        metrics = trainer.train_step(group)
        rejected_seen += metrics.rejected_count
        if step in eval_at:
            counts = per_trace_counts(trainer.candidate(), target.embed, held_out, depth)
            curve[str(step)] = pooled_acceptance(held_out, counts)
    return {
        "per_trace": counts,
        "train_config": arm.config.to_dict(),
        "traces_trained": len(trained),
        "trace_tokens_trained": sum(len(e) for e in trained),
        "init": "target" if arm.init_from_target else "start",
        "before": before,
        "simulated_acceptance": curve,
        "train_seconds": round(time.monotonic() - started, 1),
        "rejected_proposals_used": rejected_seen,
    }


def served_examples(
    target: LlamaModel,
    start: Eagle3Draft,
    prompts: list[Prompt],
    ids: list[list[int]],
    max_new_tokens: int,
    eos: tuple[int, ...],
) -> list[Example]:
    """The prompts served with the starting draft: traces with real accepted and rejected proposals."""
    served = serve_traces(target, DraftRunner(start, target.embed, "start"), ids, max_new_tokens, eos)
    return [
        build_example(
            target,
            start.vocab,
            s.prompt + s.output,
            len(s.prompt),
            prompt.domain,
            wire_steps(s.steps, len(s.output)),
        )
        for prompt, s in zip(prompts, served, strict=True)
        if s.output
    ]


def paired_report(
    held_out: list[Example], arm: list[tuple[int, int]], first: list[tuple[int, int]]
) -> dict[str, dict[str, float]]:
    """Per domain and ``all``: mean per-trace difference ``arm - first`` and its paired 95 % interval."""
    return {
        domain: {"mean_diff": round(d.mean, 4), "diff_low": round(d.low, 4), "diff_high": round(d.high, 4)}
        for domain, d in paired_by_domain(held_out, arm, first).items()
    }


def configured_target() -> tuple[LlamaModel, Any, tuple[int, ...]]:
    """The configured target in float32, its tokenizer and stop ids; torch on the configured threads."""
    from transformers import AutoTokenizer

    settings = get_settings()
    torch.set_num_threads(settings.threads)
    target = LlamaModel.load(settings.resolved_model_path)
    tokenizer = AutoTokenizer.from_pretrained(settings.resolved_model_path)
    return target, tokenizer, (tokenizer.eos_token_id,) if tokenizer.eos_token_id is not None else ()


def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = get_settings()
    torch.manual_seed(args.seed)
    target, tokenizer, eos = configured_target()
    train_prompts = build_prompts(args.workload, "train", args.requests)
    ids = [encode_prompt(p, tokenizer) for p in train_prompts]
    start = starting_draft(args.init, target, ids, args.seed)
    vocab = start.vocab
    examples = served_examples(target, start, train_prompts, ids, args.max_new_tokens, eos)
    replayed: list[Example] = []
    if any(arm.replay for arm in args.arms):
        replay_prompts = build_prompts(args.also_eval, "train", args.requests)
        replay_ids = [encode_prompt(p, tokenizer) for p in replay_prompts]
        replayed = served_examples(target, start, replay_prompts, replay_ids, args.max_new_tokens, eos)
    test_prompts = build_prompts(args.workload, "test", args.eval_requests)
    if args.also_eval:
        test_prompts += build_prompts(args.also_eval, "test", args.eval_requests)
    test_ids = [encode_prompt(p, tokenizer) for p in test_prompts]
    test_outputs = greedy_outputs(target, test_ids, args.max_new_tokens, 8, eos)
    held_out = [
        build_example(target, vocab, p + o, len(p), prompt.domain)
        for prompt, p, o in zip(test_prompts, test_ids, test_outputs, strict=True)
        if o
    ]
    arms = {
        arm.name: train_arm(
            arm, start, target, examples, replayed, held_out, args.eval_at, args.seed, args.depth
        )
        for arm in args.arms
    }
    last = str(args.eval_at[-1])
    first, *others = arms
    per_trace = {name: arm.pop("per_trace") for name, arm in arms.items()}
    for name in others:
        arms[name]["paired_vs_" + first] = paired_report(held_out, per_trace[name], per_trace[first])
    return {
        "also_eval": args.also_eval,
        "workload": args.workload,
        "init": str(args.init),
        "initial_simulated_acceptance": simulated_acceptance(start, target.embed, held_out, args.depth),
        "arms": arms,
        "final_all": {name: arm["simulated_acceptance"][last]["all"] for name, arm in arms.items()},
        "traces": len(examples),
        "trace_tokens": sum(len(e) for e in examples),
        "rejected_proposals_in_traces": int(sum(int(e.negatives.shape[0]) for e in examples)),
        "held_out_sequences": len(held_out),
        "eval_at": args.eval_at,
        "depth": args.depth,
        "threads": settings.threads,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    emit(run(args), args.json)
    return 0
