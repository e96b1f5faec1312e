"""``borealis bench drift``: does the shift detector fire on real traffic only when the domain changes?

Generates each phase's outputs (the target's greedy continuations) and feeds them as traces, in
order to the trainer's drift monitor, one label for all traffic so that only tokens can reveal a
shift. Every window is judged twice: by the detector as it runs (divergence above the reference's
own noise floor by ``js_threshold``) and by the fixed rule it replaced (divergence above
``js_threshold``). Reported: per window the phase, divergence, floor and both verdicts; per rule the
windows flagged where the phase did not change (false alarms) and the phase changes it caught.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from borealis.settings import get_settings
from borealis.wire import TraceRecord
from worker.bench.report import emit
from worker.draft.generate import greedy_outputs
from worker.engine.llama import LlamaModel
from worker.traces.drift import DriftMonitor
from worker.workloads import WORKLOADS, build_prompts, encode_prompt


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="borealis bench drift", description=__doc__)
    parser.add_argument(
        "--phases", default="chat,humaneval,prose", help=f"workloads in order, of {WORKLOADS}"
    )
    parser.add_argument("--requests-per-phase", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument(
        "--window", type=int, action="append", help="requests per window, repeatable (default 16 and 32)"
    )
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args(argv)


def judge(phases: list[tuple[str, list[list[int]]]], window: int) -> dict[str, Any]:
    drift = get_settings().drift
    monitor = DriftMonitor(window, drift.reference_windows, drift.js_threshold, drift.mix_threshold)
    rows: list[dict[str, Any]] = []
    index = 0
    for phase, outputs in phases:
        for output in outputs:
            record = TraceRecord(
                request_id=f"r{index}",
                worker_id="bench",
                model="bench",
                domain="mixed",
                domain_source="request",
                started_at=1e9 + index,
                finished_at=1e9 + index,
                finish_reason="stop",
                prompt_ids=[1],
                output_ids=output,
            )
            index += 1
            closed = monitor.observe(record)
            if closed is not None and closed.divergence is not None:
                rows.append(
                    {
                        "window": closed.index,
                        "phase": phase,
                        "divergence": round(closed.divergence, 4),
                        "floor": None
                        if closed.divergence_floor is None
                        else round(closed.divergence_floor, 4),
                        "shift": closed.shift,
                        "fixed_rule_shift": closed.divergence > drift.js_threshold,
                    }
                )
    # A window "carries" a phase change when it is the first whose requests come from the new phase.
    changes = {next(r["window"] for r in rows if r["phase"] == phase) for phase, _ in phases[1:]}

    def tally(key: str) -> dict[str, int]:
        return {
            "false_alarms": sum(1 for r in rows if r[key] and r["window"] not in changes),
            "shifts_caught": sum(1 for r in rows if r[key] and r["window"] in changes),
            "shifts": len(changes),
            "windows": len(rows),
        }

    return {
        "window_requests": window,
        "floor_rule": tally("shift"),
        "fixed_rule": tally("fixed_rule_shift"),
        "windows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    from transformers import AutoTokenizer

    args = parse_args(argv)
    torch.set_num_threads(get_settings().threads)
    model_dir = get_settings().resolved_model_path
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    target = LlamaModel.load(model_dir)
    started = time.monotonic()
    phases = []
    for phase in args.phases.split(","):
        prompts = [
            encode_prompt(p, tokenizer) for p in build_prompts(phase, "train", args.requests_per_phase)
        ]
        eos = (int(tokenizer.eos_token_id),)
        phases.append((phase, greedy_outputs(target, prompts, args.max_new_tokens, stop_token_ids=eos)))
    result = {
        "phases": args.phases.split(","),
        "requests_per_phase": args.requests_per_phase,
        "js_threshold": get_settings().drift.js_threshold,
        "by_window_size": [judge(phases, window) for window in args.window or [16, 32]],
        "seconds": round(time.monotonic() - started, 1),
    }
    emit(result, args.json)
    return 0
