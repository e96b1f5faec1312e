"""``borealis bench drafts``: which of several saved drafts proposes better? Same held-out text.

The workload's test prompts are answered once by the target (greedy); each draft is scored on those
same outputs by simulated chain acceptance (:mod:`worker.draft.shadow`), over its own vocabulary.
Every draft after the first gets the paired 95 % bootstrap interval of its per-prompt difference from
the first, per domain. Offline recipes (``borealis draft train`` flags) differ in data and steps, so
this is how two drafts they made are compared before serving decides between them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from borealis.settings import get_settings
from worker.bench.ablation import configured_target, paired_report
from worker.bench.report import emit
from worker.draft.examples import Example, build_example
from worker.draft.generate import greedy_outputs
from worker.draft.io import load_draft
from worker.draft.shadow import per_trace_counts, pooled_acceptance
from worker.workloads import build_prompts, encode_prompt


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="borealis bench drafts", description=__doc__)
    parser.add_argument("drafts", nargs="+", type=Path, help="draft directories, the first the base")
    parser.add_argument("--workload", choices=["code", "prose", "chat", "mixed"], default="code")
    parser.add_argument("--requests", type=int, default=48, help="test-split prompts")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--depth", type=int, default=4, help="simulated chain depth")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if len(set(args.drafts)) < 2:
        parser.error("name at least two different drafts")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    target, tokenizer, eos = configured_target()
    prompts = build_prompts(args.workload, "test", args.requests)
    ids = [encode_prompt(p, tokenizer) for p in prompts]
    outputs = greedy_outputs(target, ids, args.max_new_tokens, 8, eos)
    answered = [(prompt.domain, p, o) for prompt, p, o in zip(prompts, ids, outputs, strict=True) if o]
    reports: dict[str, dict[str, Any]] = {}
    per_trace = {}
    examples: list[Example] = []  # prefilled once: scores read nothing of the vocabulary (per_trace_counts)
    for path in args.drafts:
        draft, manifest = load_draft(path)
        examples = examples or [
            build_example(target, draft.vocab, p + o, len(p), domain) for domain, p, o in answered
        ]
        counts = per_trace_counts(draft, target.embed, examples, args.depth)
        per_trace[str(path)] = counts
        reports[str(path)] = {
            "simulated_acceptance": pooled_acceptance(examples, counts),
            "training": manifest.extra.get("training"),
        }
    base, *others = per_trace
    for name in others:
        reports[name]["paired_vs_first"] = paired_report(examples, per_trace[name], per_trace[base])
    return {
        "workload": args.workload,
        "prompts": len(answered),
        "max_new_tokens": args.max_new_tokens,
        "depth": args.depth,
        "first": base,
        "drafts": reports,
        "threads": get_settings().threads,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    emit(run(args), args.json)
    return 0
