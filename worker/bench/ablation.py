"""``borealis bench ablation``: does learning from rejected proposals help? Same traces, on vs off.

Serves the workload's train split through the speculative engine with the starting draft, so the
traces carry real accepted and rejected proposals; then trains two copies of that draft from the
same weights, on the same batches in the same order, for the same number of steps — one with the
rejected-proposal term, one without — and compares simulated acceptance on the test split.
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from borealis.settings import get_settings
from worker.bench.report import emit
from worker.draft.examples import Example, build_example
from worker.draft.generate import greedy_outputs
from worker.draft.io import load_draft
from worker.draft.runner import DraftRunner
from worker.draft.shadow import simulated_acceptance
from worker.draft.trainer import DraftTrainer, TrainConfig, batches
from worker.engine.engine import EngineConfig, SpecConfig, SpecEngine
from worker.engine.llama import LlamaModel
from worker.engine.tracelog import wire_steps
from worker.engine.types import GenerationRequest, SamplingParams, StepTrace, TokenEvent
from worker.workloads import build_prompts, encode_prompt


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="borealis bench ablation", description=__doc__)
    parser.add_argument("--workload", choices=["code", "prose", "chat", "mixed"], default="code")
    parser.add_argument("--init", required=True, help="starting draft artifact (serves the traces)")
    parser.add_argument("--requests", type=int, default=48, help="train-split requests served for traces")
    parser.add_argument("--eval-requests", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per arm")
    parser.add_argument("--rejected-weight", type=float, default=0.5)
    parser.add_argument("--batch-tokens", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--depth", type=int, default=4, help="simulated chain depth")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, required=True)
    return parser.parse_args(argv)


@dataclass(frozen=True)
class ServedTrace:
    prompt: list[int]
    output: list[int]
    steps: tuple[StepTrace, ...]
    features: torch.Tensor | None  # [N, 4H] float16 when the engine recorded features


def serve_traces(
    target: LlamaModel,
    runner: DraftRunner,
    prompts: list[list[int]],
    max_new_tokens: int,
    eos: tuple[int, ...],
    record_features: bool = False,
) -> list[ServedTrace]:
    """Each request decoded greedily with speculation on, in order."""
    config = EngineConfig(
        max_batch=8, max_seq_len=2048, spec=SpecConfig(mode="tree"), record_features=record_features
    )
    engine = SpecEngine(target, config)
    engine.swap_draft(runner)
    params = SamplingParams(max_new_tokens=max_new_tokens, stop_token_ids=eos)
    for index, prompt in enumerate(prompts):
        engine.submit(GenerationRequest(str(index), prompt, params))
    outputs: dict[str, list[int]] = {str(i): [] for i in range(len(prompts))}
    finals: dict[str, TokenEvent] = {}
    while engine.has_work():
        for event in engine.step():
            outputs[event.request_id].extend(event.token_ids)
            if event.finish_reason is not None:
                finals[event.request_id] = event
    served = []
    for i, prompt in enumerate(prompts):
        final = finals.get(str(i))
        trace = final.trace if final is not None and final.trace is not None else ()
        features = final.features if final is not None else None
        served.append(ServedTrace(prompt, outputs[str(i)], trace, features))
    return served


def train_arm(
    init: Path,
    target: LlamaModel,
    examples: list[Example],
    held_out: list[Example],
    config: TrainConfig,
    steps: int,
    seed: int,
    depth: int,
) -> dict[str, Any]:
    draft, _ = load_draft(init)
    draft.requires_grad_(True)
    trainer = DraftTrainer(draft, target.embed, config)
    groups = batches(examples, config.batch_tokens)
    random.Random(seed).shuffle(groups)
    rejected_seen = 0
    started = time.monotonic()
    for step in range(steps):
        metrics = trainer.train_step(groups[step % len(groups)])
        rejected_seen += metrics.rejected_count
    return {
        "rejected_weight": config.rejected_weight,
        "simulated_acceptance": simulated_acceptance(draft, target.embed, held_out, depth),
        "train_seconds": round(time.monotonic() - started, 1),
        "rejected_proposals_used": rejected_seen,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from transformers import AutoTokenizer

    settings = get_settings()
    torch.set_num_threads(settings.threads)
    torch.manual_seed(args.seed)
    model_dir = settings.resolved_model_path
    target = LlamaModel.load(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    eos = (tokenizer.eos_token_id,) if tokenizer.eos_token_id is not None else ()
    init_draft, manifest = load_draft(args.init)
    vocab = init_draft.vocab
    train_prompts = build_prompts(args.workload, "train", args.requests)
    ids = [encode_prompt(p, tokenizer) for p in train_prompts]
    served = serve_traces(
        target, DraftRunner(init_draft, target.embed, manifest.version), ids, args.max_new_tokens, eos
    )
    examples = [
        build_example(
            target,
            vocab,
            s.prompt + s.output,
            len(s.prompt),
            prompt.domain,
            wire_steps(s.steps, len(s.output)),
        )
        for prompt, s in zip(train_prompts, served, strict=True)
        if s.output
    ]
    test_prompts = build_prompts(args.workload, "test", args.eval_requests)
    test_ids = [encode_prompt(p, tokenizer) for p in test_prompts]
    test_outputs = greedy_outputs(target, test_ids, args.max_new_tokens, 8, eos)
    held_out = [
        build_example(target, vocab, p + o, len(p), prompt.domain)
        for prompt, p, o in zip(test_prompts, test_ids, test_outputs, strict=True)
        if o
    ]
    arms = {}
    for name, weight in (("without_rejected_term", 0.0), ("with_rejected_term", args.rejected_weight)):
        config = TrainConfig(lr=args.lr, rejected_weight=weight, batch_tokens=args.batch_tokens)
        arms[name] = train_arm(
            Path(args.init), target, examples, held_out, config, args.steps, args.seed, args.depth
        )
    on, off = (
        arms[k]["simulated_acceptance"]["all"] for k in ("with_rejected_term", "without_rejected_term")
    )
    return {
        "workload": args.workload,
        "init": str(args.init),
        "initial_simulated_acceptance": simulated_acceptance(init_draft, target.embed, held_out, args.depth),
        "arms": arms,
        "with_over_without": on / off if off else None,
        "traces": len(examples),
        "rejected_proposals_in_traces": int(sum(int(e.negatives.shape[0]) for e in examples)),
        "held_out_sequences": len(held_out),
        "steps": args.steps,
        "depth": args.depth,
        "threads": settings.threads,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    emit(result, args.json)
    return 0
