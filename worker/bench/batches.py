"""``borealis bench batches``: is speculation ever slower than target-only decoding, at any batch size?

For each workload and batch size, the same prompts go through a target-only engine and the
speculative engine (tree, n-gram lookup, the draft, the adaptive controller) with ``max_batch`` set to
that size and every request submitted at once, so the engine decodes full batches. Greedy outputs
must be identical; the ratio of tokens per second is the number. One process, ``--repeats`` times
both arms back to back (target-only first in even repeats, speculative first in odd ones, so a slow
drift of the machine favours neither): each repeat's ratio is paired, and a cell reports their
median with the lowest and highest (runs of 13 s on a shared 2-core VM differ by 10 % and more
between repeats of the same arm). Each cell also reports the decode-only ratio, from the engines' own
decoding-step seconds: prompt prefill is the same work in both arms, half of a batch-8 run here, and
only dilutes and blurs the speculative steps' gain or loss. And it says where the speculative arm's
full-batch decoding went (``spec_plans``: per plan, steps, rows, the controller's expected cost against
the measured one, tokens a step) beside target-only's mean step (``target_only_step_ms``): a run
slower than target-only (one chat batch-8 cell at 0.57, not reproduced) explains itself.

A cell serves at least ``--waves`` full batches of prompts. A run's end is ragged: when the queue is
empty the last sequences decode in a smaller batch, and speculation makes it more ragged (sequences
accept different numbers of tokens, so they finish apart, while target-only ones of equal length finish
together). With 16 chat prompts at batch 8 the steps below batch 8 took 38 % of the speculative arm's
decoding time here (24 of 77 steps at batch 4), none of target-only's: the cell measured its run's end
as much as its batch size.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from borealis.settings import get_settings
from worker.bench.report import emit
from worker.bench.speedup import acceptance_length, make_draft, run_engine
from worker.draft.runner import DraftRunner
from worker.engine.adaptive import Plan
from worker.engine.engine import EngineConfig, SpecConfig, SpecEngine, StepRecord
from worker.engine.llama import SERVING_DTYPES, LlamaModel
from worker.engine.types import SamplingParams, SpecStats
from worker.workloads import build_prompts, encode_prompt


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="borealis bench batches", description=__doc__)
    parser.add_argument("--workloads", default="code,prose,chat")
    parser.add_argument("--batches", default="1,2,4,8")
    parser.add_argument("--requests", type=int, default=16, help="test-split prompts per workload, at least")
    parser.add_argument(
        "--waves", type=int, default=6, help="a cell serves at least this many full batches of prompts"
    )
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument(
        "--draft", default="random", help="'random' (day-0 draft) or a draft artifact directory"
    )
    parser.add_argument("--repeats", type=int, default=1, help="alternating runs of both arms per cell")
    parser.add_argument("--dtype", choices=list(SERVING_DTYPES), default="float32", help="both arms' dtype")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args(argv)
    if args.requests < 1 or args.repeats < 1 or args.waves < 1:
        parser.error("--requests, --waves and --repeats must be positive")
    if args.max_new_tokens < 2:  # the first token comes from prefill: the decode-only ratio needs one more
        parser.error("--max-new-tokens must be at least 2")
    return args


def main(argv: list[str] | None = None) -> int:
    from transformers import AutoTokenizer

    args = parse_args(argv)
    settings = get_settings()
    threads = args.threads or settings.threads
    torch.set_num_threads(threads)
    model_dir = settings.resolved_model_path
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    target = LlamaModel.load_named(model_dir, args.dtype)
    batches = [int(b) for b in args.batches.split(",") if b]
    eos = int(tokenizer.eos_token_id)
    params = SamplingParams(max_new_tokens=args.max_new_tokens, stop_token_ids=(eos,))
    cells: dict[str, dict[str, Any]] = {}
    identical = True
    for workload in [w for w in args.workloads.split(",") if w]:
        served = [max(args.requests, args.waves * batch) for batch in batches]
        everything = [encode_prompt(p, tokenizer) for p in build_prompts(workload, "test", max(served))]
        train = [encode_prompt(p, tokenizer) for p in build_prompts(workload, "train", 400)]
        draft, name = make_draft(args.draft, target, train)
        max_len = max(map(len, everything)) + args.max_new_tokens + 8
        cells[workload] = {}
        for batch, requests in zip(batches, served, strict=True):
            prompts = everything[:requests]
            off = SpecEngine(target, EngineConfig(batch, max_len, spec=SpecConfig(mode="off")))
            spec = SpecEngine(
                target, EngineConfig(batch, max_len), DraftRunner(draft, target.embed, version=name)
            )
            for engine in (off, spec):  # warm: kernels for this batch size, the controller's first costs
                run_engine(engine, prompts[:batch], SamplingParams(8, stop_token_ids=(eos,)))
            runs = []
            spec.step_log, off.step_log = [], []
            for repeat in range(args.repeats):
                if repeat % 2:  # every other repeat runs speculation first: drift between runs cancels
                    spec_out, stats, spec_s = run_engine(spec, prompts, params)
                    off_out, off_stats, off_s = run_engine(off, prompts, params)
                else:
                    off_out, off_stats, off_s = run_engine(off, prompts, params)
                    spec_out, stats, spec_s = run_engine(spec, prompts, params)
                identical = identical and spec_out == off_out
                off_tok_s, spec_tok_s = sum(map(len, off_out)) / off_s, sum(map(len, spec_out)) / spec_s
                # the same tokens decoded in both arms (outputs identical): the seconds' ratio is the speedup
                decode = decode_seconds(off_stats) / decode_seconds(stats)
                runs.append((spec_tok_s / off_tok_s, off_tok_s, spec_tok_s, acceptance_length(stats), decode))
            cells[workload][str(batch)] = {  # medians over the repeats (an even count: the middle two's mean)
                "target_only_tok_s": statistics.median(run[1] for run in runs),
                "spec_tok_s": statistics.median(run[2] for run in runs),
                **_ratio("spec_over_target_only", [run[0] for run in runs]),
                **_ratio("decode_spec_over_target_only", [run[4] for run in runs]),
                "mean_acceptance_length": statistics.median(run[3] for run in runs),
                "target_only_step_ms": _mean_step_ms(off.step_log, batch),
                "spec_plans": plan_costs(spec.step_log, batch),
                "requests": requests,
                "repeats": args.repeats,
            }
    ratios = [cell["spec_over_target_only"] for rows in cells.values() for cell in rows.values()]
    decode_ratios = [
        cell["decode_spec_over_target_only"] for rows in cells.values() for cell in rows.values()
    ]
    result = {
        "cells": cells,
        "min_spec_over_target_only": min(ratios),
        "min_decode_spec_over_target_only": min(decode_ratios),
        "outputs_identical": identical,
        "draft": args.draft,
        "dtype": args.dtype,
        "threads": threads,
        "requests_per_workload": args.requests,
        "waves": args.waves,
        "max_new_tokens": args.max_new_tokens,
        "batches": batches,
    }
    emit(result, Path(args.json_path) if args.json_path else None)
    return 0 if identical else 1


def plan_costs(steps: list[StepRecord], batch: int) -> list[dict[str, Any]]:
    """The plans of the full-batch steps over every repeat, most time first: how often each ran, its
    rows, the cost the controller expected against what verification took, and the tokens it emitted
    (a run slower than target-only shows here which plans it paid for)."""
    by_plan: dict[Plan, list[StepRecord]] = {}
    for step in steps:
        if step.batch == batch:
            by_plan.setdefault(step.plan, []).append(step)
    costs = [
        {
            "plan": asdict(plan),
            "steps": len(group),
            "seconds": sum(step.step_seconds for step in group),
            "mean_rows": statistics.fmean(step.rows for step in group),
            "predicted_verify_ms": statistics.fmean(step.predicted_ms for step in group),
            "verify_ms": 1000 * statistics.fmean(step.verify_seconds for step in group),
            "step_ms": 1000 * statistics.fmean(step.step_seconds for step in group),
            "tokens_per_step": statistics.fmean(step.tokens for step in group),
        }
        for plan, group in by_plan.items()
    ]
    return sorted(costs, key=lambda cost: -cost["seconds"])


def _mean_step_ms(steps: list[StepRecord], batch: int) -> float | None:
    full = [step.step_seconds for step in steps if step.batch == batch]
    return 1000 * statistics.fmean(full) if full else None


def decode_seconds(stats: list[SpecStats]) -> float:
    """Wall time of a run's decoding steps (each request holds its share of every step it was in)."""
    return sum(s.decode_seconds for s in stats)


def _ratio(name: str, runs: list[float]) -> dict[str, Any]:
    """A cell's ratio: the median over repeats, its range and every repeat's value."""
    ordered = sorted(runs)
    return {
        name: statistics.median(ordered),
        f"{name}_range": [ordered[0], ordered[-1]],
        f"{name}_runs": runs,
    }
