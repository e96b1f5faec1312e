"""``borealis bench shift``: does the flywheel follow a domain shift? Static vs online vs scratch.

Every arm gets its own private appliance (control plane, inference worker, Redis; plus a Celery
trainer for the learning arms) and the same requests, phase after phase (default: chat, then
HumanEval, then prose), sent through the OpenAI API by concurrent clients, window by window:

- ``static``: a draft trained offline on the first phase only (``borealis draft train``), live
  from the start, no trainer: what a deployment without the flywheel serves.
- ``online``: the same draft live at the start, learning on, candidates promoted by the auto policy
  (the paired interval of candidate - live above zero).
- ``scratch``: no draft at the start; the trainer builds a random-weight draft from the first
  traces and learns from there.

Trainer modes (never mixed in one number): ``dedicated`` reproduces a trainer on its own machine on
2 cores. Learning is paused while a window is served; then the trainer, at full duty, reads the
window's traces, takes ``--train-steps-per-request`` optimizer steps per trace it trains on, and
publishes a candidate; traffic waits for that decision (and the swap, when promoted). The learning
curve is then a function of traffic, not of CPU contention. ``colocated`` is real time: the trainer
learns beside serving as `borealis up` runs it, with the CPU serving leaves idle (``--think-seconds``
makes the clients leave some, like users reading answers), and a block of identical traffic is served
back to back with learning paused and on, alternately, to measure what learning costs serving.

Two acceptance lengths (tokens per target step): served tau from the responses (n-gram lookup and
draft together) and draft-only tau, each arm's live draft after every window scored by simulated
chain acceptance on reserved prompts of each phase that are never served nor trained on
(``shift_eval``). Online / static ratios come with paired bootstrap 95 % intervals.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from borealis.control_client import ControlPlaneClient
from borealis.processes import cli_argv, cpu_seconds
from borealis.settings import Settings, get_settings
from worker.bench.appliance import Appliance, private_appliance, wait_for_version
from worker.bench.clients import Outcome, prompt_request, run_all
from worker.bench.report import emit
from worker.bench.shift_eval import (
    Counts,
    DraftScorer,
    column_totals,
    no_draft_counts,
    paired_ratio_interval,
    pooled_interval,
    pooled_tau,
    reserved_traces,
    score_versions,
)
from worker.workloads import WORKLOADS, Prompt, build_prompts

ARMS = ("static", "online", "scratch")
TRAINER_MODES = ("dedicated", "colocated")
THROUGHPUT_KEYS = (
    "serving_tok_s_learning_on",
    "serving_tok_s_learning_paused",
    "learning_on_over_paused",
    "learning_on_over_paused_per_pair",
    "cpu_share_learning_on",
    "cpu_share_learning_paused",
    "request_seconds_per_token_learning_on",
    "request_seconds_per_token_learning_paused",
    "request_seconds_per_token_on_over_paused",
    "block_think_seconds",
)


@dataclass(frozen=True)
class Served:
    """One finished request as its client saw it, and the phase its prompt was drawn from."""

    outcome: Outcome
    phase: str

    @property
    def steps(self) -> int:
        return int(self.outcome.spec.get("num_steps", 0))

    @property
    def accepted(self) -> int:
        return int(self.outcome.spec.get("num_accepted_tokens", 0))


@dataclass
class ArmRun:
    """What one arm served, the live draft after each window, and the trainer's final counters."""

    served: list[Served] = field(default_factory=list)
    checkpoints: list[str | None] = field(default_factory=list)  # live version after window i
    promoted_after_window: list[int] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    draft_counts: dict[str, Counts] = field(default_factory=dict)  # version -> per eval trace


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="borealis bench shift", description=__doc__)
    parser.add_argument(
        "--phases", default="chat,humaneval,prose", help=f"workloads in order, of {WORKLOADS}"
    )
    parser.add_argument("--requests-per-phase", type=int, default=48)
    parser.add_argument(
        "--first-phase-requests",
        type=int,
        default=None,
        help="requests of the first phase, the static draft's own domain (default: --requests-per-phase)",
    )
    parser.add_argument(
        "--eval-per-phase", type=int, default=16, help="reserved prompts per phase, never served"
    )
    parser.add_argument("--arms", default=",".join(ARMS), help=f"subset of {','.join(ARMS)}")
    parser.add_argument("--trainer", choices=TRAINER_MODES, default="dedicated")
    parser.add_argument("--train-steps-per-request", type=float, default=1.0, help="dedicated mode's S")
    parser.add_argument("--window", type=int, default=16, help="requests per window (a decision point)")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        help="sampling temperature of the served requests (seeded per request; draft-only tau stays greedy)",
    )
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--think-seconds",
        type=float,
        default=0.0,
        help="each client's pause after a reply while the arms serve (0: back to back; blocks: see below)",
    )
    parser.add_argument("--depth", type=int, default=4, help="simulated chain depth of draft-only tau")
    parser.add_argument("--static-draft", type=Path, default=None, help="offline draft (default: train one)")
    parser.add_argument("--static-minutes", type=float, default=10.0, help="offline training budget")
    parser.add_argument(
        "--heldout-fraction",
        type=float,
        default=None,
        help="share of traces the trainer holds out to judge candidates (default: its setting, 0.1)",
    )
    parser.add_argument("--trainer-wait-seconds", type=float, default=900.0, help="dedicated: per window")
    parser.add_argument("--throughput-requests", type=int, default=12, help="colocated: per block")
    parser.add_argument("--throughput-blocks", type=int, default=2, help="colocated: paused+on pairs")
    parser.add_argument(
        "--block-think-seconds",
        type=float,
        default=0.0,
        help="colocated: clients' pause in the blocks too (then compare the per-token latency, not tok/s)",
    )
    parser.add_argument("--settle-seconds", type=float, default=20.0, help="colocated: after pause/resume")
    parser.add_argument("--candidate-every-rounds", type=int, default=2, help="colocated mode")
    parser.add_argument("--steps-per-round", type=int, default=10, help="colocated mode")
    parser.add_argument("--plot", type=Path, default=None, help="write a Plotly PNG of the curves here")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    args.phases = [p for p in args.phases.split(",") if p]
    first = args.requests_per_phase if args.first_phase_requests is None else args.first_phase_requests
    args.phase_requests = [first] + [args.requests_per_phase] * (len(args.phases) - 1)
    args.arms = [a for a in args.arms.split(",") if a]
    if min(args.think_seconds, args.block_think_seconds) < 0:
        parser.error("think seconds cannot be negative")
    unknown = [p for p in args.phases if p not in WORKLOADS] + [a for a in args.arms if a not in ARMS]
    if unknown or not args.phases or not args.arms or len(set(args.phases)) != len(args.phases):
        parser.error(f"unknown, repeated or missing phases/arms: {unknown or args.phases}")
    return args


def phase_prompts(
    phases: list[str], per_phase: list[int], eval_per_phase: int
) -> tuple[list[tuple[str, Prompt]], dict[str, list[Prompt]]]:
    """(phase, prompt) to serve in order, and each phase's reserved evaluation prompts.

    The first phase draws from the test split (the static draft trained on the train split), the
    others from both splits (the static draft never saw those workloads). The last
    ``eval_per_phase`` prompts of each pool are reserved; the rest are served without repeats
    while any is left (then again in order: ``repeated_requests`` counts them), so a learning arm's
    draft-only tau never scores memorised answers. ``per_phase``: requests of each phase, in order.
    """
    served: list[tuple[str, Prompt]] = []
    reserved: dict[str, list[Prompt]] = {}
    for phase, count in zip(phases, per_phase, strict=True):
        pool = build_prompts(phase, "test")
        if phase != phases[0]:
            pool += build_prompts(phase, "train")
        if len(pool) <= eval_per_phase:
            raise ValueError(f"workload {phase} has {len(pool)} prompts, too few to reserve {eval_per_phase}")
        reserved[phase], pool = pool[len(pool) - eval_per_phase :], pool[: len(pool) - eval_per_phase]
        served += [(phase, pool[i % len(pool)]) for i in range(count)]
    return served, reserved


def repeated_requests(items: list[tuple[str, Prompt]]) -> dict[str, int]:
    """Per phase, requests whose prompt the phase had already served (a pool smaller than the phase)."""
    seen: set[tuple[str, str]] = set()
    repeats: dict[str, int] = {}
    for phase, prompt in items:
        repeats[phase] = repeats.get(phase, 0) + ((phase, prompt.key) in seen)
        seen.add((phase, prompt.key))
    return repeats


def window_slices(served: list[tuple[str, Prompt]], size: int) -> list[slice]:
    """Consecutive windows of ``size`` requests, never straddling a phase boundary."""
    out: list[slice] = []
    start = 0
    for index in range(1, len(served) + 1):
        if index == len(served) or index - start == size or served[index][0] != served[start][0]:
            out.append(slice(start, index))
            start = index
    return out


def acceptance_length(served: list[Served]) -> float | None:
    """Served tau: tokens emitted per target step (accepted draft tokens + the target's own)."""
    steps = sum(s.steps for s in served)
    return (steps + sum(s.accepted for s in served)) / steps if steps else None


def _wall(served: list[Served]) -> float:
    """First request sent to last reply."""
    return max(s.outcome.finished for s in served) - min(s.outcome.started for s in served)


def tokens_per_second(served: list[Served]) -> float | None:
    """Completion tokens per second of serving: first request sent to last reply."""
    if not served:
        return None
    wall = _wall(served)
    return sum(s.outcome.completion_tokens for s in served) / wall if wall > 0 else None


def serving_tokens_per_second(served: list[Served], slices: list[slice]) -> float | None:
    """Over windows, excluding the dedicated trainer's turns between them (traffic waits then)."""
    wall = sum(_wall(served[w]) for w in slices if served[w])
    tokens = sum(s.outcome.completion_tokens for s in served)
    return tokens / wall if wall > 0 else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a is not None and b else None


def _round(value: float | None) -> float | None:
    return round(value, 4) if value is not None else None


def train_static_draft(first_phase: str, minutes: float, out: Path) -> Path:
    command = cli_argv("draft", "train", "--workload", first_phase)
    command += ["--minutes", str(minutes), "--out", str(out)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return out


# A trainer of its own judges like one, not like the co-located trainer the appliance starts by default.
OWN_MACHINE_JUDGE_MAX_TRACES = Settings.model_fields["trainer_judge_max_traces"].default


def bench_env(args: argparse.Namespace) -> dict[str, str]:
    """Trainer cadence scaled to a benchmark of minutes, not a deployment of days."""
    env = {
        "BOREALIS_TRAINER_IDLE_SECONDS": "1",
        "BOREALIS_DRIFT_WINDOW_REQUESTS": str(max(8, args.requests_per_phase // 3)),
        "BOREALIS_HEARTBEAT_SECONDS": "1",
        # Fixed speculation depth: the arms differ in their drafts, not in what contention does to
        # the adaptive depth, so acceptance length compares drafts.
        "BOREALIS_SPEC_ADAPTIVE": "false",
    }
    if args.heldout_fraction is not None:
        env["BOREALIS_TRAINER_HELDOUT_FRACTION"] = str(args.heldout_fraction)
    if args.trainer == "dedicated":
        env |= {
            "BOREALIS_TRAINER_DUTY_CYCLE": "1.0",
            "BOREALIS_TRAINER_THREADS": os.environ.get("BOREALIS_TRAINER_THREADS", "0"),  # every thread
            "BOREALIS_TRAINER_JUDGE_MAX_TRACES": str(OWN_MACHINE_JUDGE_MAX_TRACES),
            "BOREALIS_TRAINER_STEPS_PER_TRACE": str(args.train_steps_per_request),
            "BOREALIS_TRAINER_CANDIDATE_EVERY_ROUNDS": "1",
            "BOREALIS_TRAINER_JUDGE_FRESH_TRACES": "1",  # each window judges the draft of the windows before
            "BOREALIS_TRAINER_READ_BATCH": str(max(512, args.window)),
        }
    else:
        env |= {
            "BOREALIS_TRAINER_CANDIDATE_EVERY_ROUNDS": str(args.candidate_every_rounds),
            "BOREALIS_TRAINER_STEPS_PER_ROUND": str(args.steps_per_round),
        }
    return env


def serve(
    base_url: str,
    model: str,
    items: list[tuple[str, Prompt]],
    args: argparse.Namespace,
    first: int = 0,
    think_s: float = 0.0,
) -> list[Served]:
    """``items`` through the API; request ``i`` is the run's ``first + i``-th (its sampling seed);
    each client pauses ``think_s`` after a reply."""
    temperature = args.temperature
    requests = [
        prompt_request(model, prompt, args.max_tokens, temperature, seed=first + i if temperature else None)
        for i, (_, prompt) in enumerate(items)
    ]
    outcomes = run_all(base_url, requests, args.concurrency, think_s)
    return [Served(o, items[o.index][0]) for o in outcomes]


def _learning(client: httpx.Client, paused: bool) -> None:
    action = "pause" if paused else "resume"
    client.post(f"/api/learning/{action}", json={"reason": "bench shift"}).raise_for_status()


def trainer_progress(client: httpx.Client) -> dict[str, Any] | None:
    views = client.get("/api/trainers").json()
    return dict(views[0]["progress"]) if views else None


def live_version(client: httpx.Client) -> str | None:
    """The version the workers serve (one worker per arm)."""
    workers = [w for w in client.get("/api/workers").json() if w["healthy"]]
    return workers[0]["draft_version"] if workers else None


def desired_version(client: httpx.Client) -> str | None:
    live = [d["id"] for d in client.get("/api/drafts").json() if d["status"] == "live"]
    return live[0] if live else None


def await_decision(client: httpx.Client, traces: int, timeout_s: float) -> bool:
    """Dedicated mode: the trainer has dealt with ``traces`` traces (trained and a candidate decided,
    or held until it has enough to start a draft) and the workers serve whatever the policy made
    live. False on timeout (e.g. a dropped trace)."""
    _learning(client, paused=False)
    deadline = time.monotonic() + timeout_s
    done = False
    while time.monotonic() < deadline:
        progress = trainer_progress(client)
        if progress is not None and progress["acked_records"] + progress["holding_records"] >= traces:
            done = True
            break
        time.sleep(0.5)
    _learning(client, paused=True)
    version = desired_version(client)
    if version is not None:
        wait_for_version(client, version)
    return done


@dataclass(frozen=True)
class Block:
    """One block of the co-located throughput comparison."""

    paused: bool  # learning paused (else on)
    tokens: int
    seconds: float
    cpu_seconds: dict[str, float]  # per appliance process, during the block
    seconds_per_token: tuple[float, ...] = ()  # per answered request: its latency over its tokens


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds each named process has used so far (the start of a measured span)."""
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def cpu_used_since(pids: dict[str, int], before: dict[str, float]) -> dict[str, float]:
    """CPU seconds each process used since ``before``; never negative (a process gone reads 0)."""
    return {name: max(0.0, cpu_seconds(pid) - before[name]) for name, pid in pids.items()}


def throughput_blocks(
    appliance: Appliance, model: str, items: list[tuple[str, Prompt]], args: argparse.Namespace
) -> dict[str, Any]:
    """Colocated mode: identical traffic with learning paused and on, alternately (paused first in even
    pairs, on first in odd ones, so a drift of the machine favours neither), the draft held fixed."""
    client = appliance.admin_client()
    client.put("/api/policy", json={"mode": "manual", "reason": "bench shift: hold draft"}).raise_for_status()
    block = [items[i * len(items) // args.throughput_requests] for i in range(args.throughput_requests)]
    pids = appliance.pids()
    blocks = []
    for pair in range(args.throughput_blocks):
        for paused in (True, False) if pair % 2 == 0 else (False, True):
            _learning(client, paused)
            time.sleep(args.settle_seconds)  # the trainer notices between two optimizer steps
            before = cpu_snapshot(pids)
            started = time.monotonic()
            outcomes = serve(appliance.base_url, model, block, args, think_s=args.block_think_seconds)
            seconds = time.monotonic() - started
            used = cpu_used_since(pids, before)
            tokens = sum(s.outcome.completion_tokens for s in outcomes)
            answered = [s.outcome for s in outcomes if s.outcome.completion_tokens]
            per_token = tuple(o.latency_s / o.completion_tokens for o in answered)
            blocks.append(Block(paused, tokens, seconds, used, per_token))
    _learning(client, False)
    return {
        **summarize_blocks(blocks),
        "throughput_requests_per_mode": args.throughput_blocks * len(block),
        "block_think_seconds": args.block_think_seconds,
    }


def summarize_blocks(blocks: list[Block]) -> dict[str, Any]:
    """Pooled tok/s per mode and their ratio; each pair's ratio (the spread); the median request's
    seconds per token per mode (what a user waits: with clients that pause, tok/s is theirs to set);
    each process's share of a core per mode (what learning adds, and where)."""
    summary: dict[str, Any] = {}
    for paused, mode in ((True, "paused"), (False, "on")):
        mine = [b for b in blocks if b.paused == paused]
        seconds = sum(b.seconds for b in mine)
        summary[f"serving_tok_s_learning_{mode}"] = round(sum(b.tokens for b in mine) / seconds, 2)
        latencies = [x for b in mine for x in b.seconds_per_token]
        summary[f"request_seconds_per_token_learning_{mode}"] = (
            round(statistics.median(latencies), 5) if latencies else None
        )
        summary[f"cpu_share_learning_{mode}"] = {
            name: round(sum(b.cpu_seconds[name] for b in mine) / seconds, 3) for name in mine[0].cpu_seconds
        }
    summary["learning_on_over_paused"] = _ratio(
        summary["serving_tok_s_learning_on"], summary["serving_tok_s_learning_paused"]
    )
    summary["request_seconds_per_token_on_over_paused"] = _ratio(
        summary["request_seconds_per_token_learning_on"], summary["request_seconds_per_token_learning_paused"]
    )
    pairs = zip(blocks[::2], blocks[1::2], strict=True)
    summary["learning_on_over_paused_per_pair"] = [
        round((on.tokens / on.seconds) / (off.tokens / off.seconds), 4)
        for on, off in (sorted(pair, key=lambda b: b.paused) for pair in pairs)
    ]
    return summary


def run_arm(
    arm: str,
    static_draft: Path | None,
    items: list[tuple[str, Prompt]],
    scorer: DraftScorer,
    args: argparse.Namespace,
) -> ArmRun:
    learning = arm != "static"
    dedicated = learning and args.trainer == "dedicated"
    result = ArmRun()
    with private_appliance(get_settings(), trainer=learning, extra_env=bench_env(args)) as appliance:
        client = appliance.admin_client()
        policy = {"mode": "auto", "margin": 0.0, "reason": "bench shift"}
        client.put("/api/policy", json=policy).raise_for_status()
        control = ControlPlaneClient(appliance.base_url, appliance.cluster_token, timeout_s=60)
        if static_draft is not None and arm != "scratch":  # first publish: promoted, nothing live
            wait_for_version(client, control.publish(static_draft, source="offline").version)
        if dedicated:
            _learning(client, paused=True)
        model = client.get("/v1/models").json()["data"][0]["id"]
        pids = appliance.pids()
        before = cpu_snapshot(pids)
        started = time.monotonic()
        timeouts = 0
        for index, window in enumerate(window_slices(items, args.window)):
            result.served += serve(
                appliance.base_url, model, items[window], args, window.start, args.think_seconds
            )
            if dedicated:
                ok = sum(1 for s in result.served if s.outcome.ok)
                timeouts += not await_decision(client, ok, args.trainer_wait_seconds)
            version = live_version(client)
            if result.checkpoints and version != result.checkpoints[-1]:
                result.promoted_after_window.append(index)
            result.checkpoints.append(version)
        seconds = time.monotonic() - started
        result.facts = arm_facts(client, seconds, timeouts if dedicated else None)
        # what serving left idle, and who took it
        result.facts["cpu_share"] = {
            name: round(used / seconds, 3) for name, used in cpu_used_since(pids, before).items()
        }
        result.draft_counts = score_versions(
            scorer, {v for v in result.checkpoints if v is not None}, control.fetch_draft
        )
        if learning and args.trainer == "colocated" and arm == "online":
            result.facts.update(throughput_blocks(appliance, model, items, args))
        control.close()
    return result


def arm_facts(client: httpx.Client, seconds: float, trainer_wait_timeouts: int | None) -> dict[str, Any]:
    drafts = client.get("/api/drafts").json()
    lags = [d["request_to_live_seconds"] for d in drafts if d.get("request_to_live_seconds") is not None]
    facts: dict[str, Any] = {
        "seconds": round(seconds, 1),
        "drafts_registered": len(drafts),
        "promotions": sum(1 for d in drafts if d.get("promoted_at")),
        "auto_rollbacks": len(client.get("/api/audit", params={"action": "draft.auto_rollback"}).json()),
        "request_to_live_seconds": {
            "median": round(statistics.median(lags), 2) if lags else None,
            "max": round(max(lags), 2) if lags else None,
            "promotions": len(lags),
        },
    }
    if trainer_wait_timeouts is not None:
        facts["trainer_wait_timeouts"] = trainer_wait_timeouts
    progress = trainer_progress(client)
    if progress is not None:
        cpu_minutes = progress["cpu_seconds"] / 60
        facts |= {
            "optimizer_steps": progress["optimizer_steps"],
            "rows_trained": progress["trained_rows"],
            "traces_trained": progress["trained_records"],
            "traces_held_out": progress["heldout_records"],
            "trainer_rounds": progress["round"],
            # where a co-located trainer's time goes: examples from shipped features, or a target prefill each
            "examples_from_features": progress["examples_from_features"],
            "examples_by_prefill": progress["examples_by_prefill"],
            "examples_revocabulary": progress["examples_revocabulary"],
            "trainer_cpu_seconds": round(progress["cpu_seconds"], 1),
            "trainer_steps_per_cpu_minute": round(progress["optimizer_steps"] / cpu_minutes, 2)
            if cpu_minutes
            else None,
        }
    return facts


# -- summary ---------------------------------------------------------------------------------------


def checkpoint_counts(run: ArmRun, scorer: DraftScorer) -> list[Counts]:
    """Per window: the per-trace counts of the draft live after it (tau 1 where none was)."""
    none = no_draft_counts(scorer)
    return [run.draft_counts[v] if v is not None else none for v in run.checkpoints]


def draft_tau_columns(
    run: ArmRun, scorer: DraftScorer, phases: list[str], slices: list[slice], items: list[tuple[str, Prompt]]
) -> list[np.ndarray]:
    """One stratum per phase: each reserved trace's (emitted, steps), summed over the phase's windows."""
    counts = checkpoint_counts(run, scorer)
    strata = []
    for phase in phases:
        windows = [i for i, s in enumerate(slices) if items[s.start][0] == phase]
        strata.append(column_totals([counts[i] for i in windows], scorer.phase_rows(phase)))
    return strata


def served_columns(runs: list[ArmRun], phases: list[str]) -> list[list[np.ndarray]]:
    """Per arm, one stratum per phase: each request's (emitted, steps), requests every arm served."""
    out: list[list[np.ndarray]] = [[] for _ in runs]
    for phase in phases:
        index = [
            i
            for i, first in enumerate(runs[0].served)
            if first.phase == phase and all(r.served[i].outcome.ok and r.served[i].steps for r in runs)
        ]
        for arm, run in enumerate(runs):
            rows = [(run.served[i].steps + run.served[i].accepted, run.served[i].steps) for i in index]
            out[arm].append(np.asarray(rows, dtype=np.int64).reshape(len(rows), 2))
    return out


def _pooled(strata: list[np.ndarray]) -> float | None:
    total = sum((s.sum(axis=0) for s in strata), np.zeros(2))
    return float(total[0] / total[1]) if total[1] else None


def windows_report(
    run: ArmRun, scorer: DraftScorer, slices: list[slice], items: list[tuple[str, Prompt]], first: str
) -> list[dict[str, Any]]:
    counts = checkpoint_counts(run, scorer)
    series = []
    for index, window in enumerate(slices):
        phase = items[window.start][0]
        group = run.served[window]
        tau = acceptance_length(group)
        tok_s = tokens_per_second(group)
        draft = counts[index]
        series.append(
            {
                "window": index,
                "requests": window.stop,
                "phase": phase,
                "mean_acceptance_length": _round(tau),
                "served_tau_ci95": pooled_interval(
                    [(s.steps + s.accepted, s.steps) for s in group if s.outcome.ok]
                ),
                "draft_tau": _round(pooled_tau([draft[r] for r in scorer.phase_rows(phase)])),
                "draft_tau_ci95": pooled_interval([draft[r] for r in scorer.phase_rows(phase)]),
                "draft_tau_first_phase": _round(pooled_tau([draft[r] for r in scorer.phase_rows(first)])),
                "tok_s": round(tok_s, 2) if tok_s is not None else None,
                "draft_version": run.checkpoints[index],
                "promoted": index in run.promoted_after_window,
                "errors": sum(1 for s in group if not s.outcome.ok),
            }
        )
    return series


def summarize(
    args: argparse.Namespace,
    items: list[tuple[str, Prompt]],
    runs: dict[str, ArmRun],
    scorer: DraftScorer,
) -> dict[str, Any]:
    phases, shifted = args.phases, args.phases[1:]
    slices = window_slices(items, args.window)
    arms: dict[str, Any] = {}
    for arm, run in runs.items():
        series = windows_report(run, scorer, slices, items, phases[0])
        arms[arm] = {
            "windows": series,
            "phase_served_tau": {
                p: _round(acceptance_length([s for s in run.served if s.phase == p])) for p in phases
            },
            "phase_draft_tau": {
                p: _round(_pooled(draft_tau_columns(run, scorer, [p], slices, items))) for p in phases
            },
            "shifted_served_tau": _round(acceptance_length([s for s in run.served if s.phase in shifted])),
            "shifted_draft_tau": _round(_pooled(draft_tau_columns(run, scorer, shifted, slices, items))),
            "tok_s": _round(serving_tokens_per_second(run.served, slices)),
            "errors": sum(1 for s in run.served if not s.outcome.ok),
            **{k: v for k, v in run.facts.items() if k not in THROUGHPUT_KEYS},
        }
    summary: dict[str, Any] = {
        "phases": phases,
        "requests_per_phase": args.requests_per_phase,
        "phase_requests": args.phase_requests,
        "repeated_requests": repeated_requests(items),
        "trainer_mode": args.trainer,
        "train_steps_per_request": args.train_steps_per_request if args.trainer == "dedicated" else None,
        "arms": arms,
    }
    if "online" in runs:
        summary["recovery_requests"] = recovery_requests(arms["online"]["windows"], phases)
        summary["old_domain_draft_tau_drop"] = old_domain_drop(arms["online"]["windows"], phases[0])
        for key in THROUGHPUT_KEYS:
            summary[key] = runs["online"].facts.get(key)
    if "static" in runs and shifted:
        static = runs["static"]
        for arm in ("online", "scratch"):
            if arm in runs:
                summary |= ratios(arm, runs[arm], static, scorer, shifted, slices, items)
        if "online" in runs:  # today's key, kept: served tau, online / static, shifted phases
            summary["online_over_static_shifted"] = summary["online_over_static_served_tau_shifted"]
    if "static" in runs and "scratch" in runs:
        level = arms["static"]["phase_draft_tau"][phases[0]]
        first = [w for w in arms["scratch"]["windows"] if w["phase"] == phases[0]]
        summary["scratch_reaches_static_draft_tau_after_requests"] = _first_reaching(first, level)
    return summary


def ratios(
    arm: str,
    run: ArmRun,
    static: ArmRun,
    scorer: DraftScorer,
    shifted: list[str],
    slices: list[slice],
    items: list[tuple[str, Prompt]],
) -> dict[str, Any]:
    """``ARM_over_static_{draft,served}_tau_shifted`` and their paired 95 % intervals."""
    ours = draft_tau_columns(run, scorer, shifted, slices, items)
    theirs = draft_tau_columns(static, scorer, shifted, slices, items)
    served_ours, served_theirs = served_columns([run, static], shifted)
    return {
        f"{arm}_over_static_draft_tau_shifted": _ratio(_pooled(ours), _pooled(theirs)),
        f"{arm}_over_static_draft_tau_shifted_ci95": paired_ratio_interval(ours, theirs),
        f"{arm}_over_static_served_tau_shifted": _ratio(_pooled(served_ours), _pooled(served_theirs)),
        f"{arm}_over_static_served_tau_shifted_ci95": paired_ratio_interval(served_ours, served_theirs),
    }


def recovery_requests(series: list[dict[str, Any]], phases: list[str]) -> dict[str, int | None]:
    """Per shift: requests into the new phase until a window's served tau is within 10% of the
    pre-shift level."""
    result: dict[str, int | None] = {}
    for before, after in itertools.pairwise(phases):
        pre = [w for w in series if w["phase"] == before and w["mean_acceptance_length"] is not None]
        post = [w for w in series if w["phase"] == after and w["mean_acceptance_length"] is not None]
        key = f"{before}->{after}"
        result[key] = None
        if not pre or not post:
            continue
        start = pre[-1]["requests"]
        for window in post:
            if window["mean_acceptance_length"] >= 0.9 * pre[-1]["mean_acceptance_length"]:
                result[key] = window["requests"] - start
                break
    return result


def old_domain_drop(series: list[dict[str, Any]], first: str) -> float | None:
    """Draft-only tau on the first phase's reserved traces: end of that phase minus end of the run."""
    before = [w["draft_tau_first_phase"] for w in series if w["phase"] == first]
    if not before or before[-1] is None or series[-1]["draft_tau_first_phase"] is None:
        return None
    return round(before[-1] - series[-1]["draft_tau_first_phase"], 4)


def _first_reaching(series: list[dict[str, Any]], level: float | None) -> int | None:
    """Requests until a window's draft-only tau first reaches ``level`` (None: never in this run)."""
    if level is None:
        return None
    for window in series:
        if window["draft_tau"] is not None and window["draft_tau"] >= level:
            return int(window["requests"])
    return None


def build_scorer(reserved: dict[str, list[Prompt]], args: argparse.Namespace) -> DraftScorer:
    import torch
    from transformers import AutoTokenizer

    from worker.engine.llama import LlamaModel
    from worker.workloads import encode_prompt

    settings = get_settings()
    torch.set_num_threads(settings.threads)
    target = LlamaModel.load(settings.resolved_model_path)
    tokenizer = AutoTokenizer.from_pretrained(settings.resolved_model_path)
    eos = (tokenizer.eos_token_id,) if tokenizer.eos_token_id is not None else ()
    traces = reserved_traces(target, reserved, lambda p: encode_prompt(p, tokenizer), args.max_tokens, eos)
    return DraftScorer(target, traces, args.depth)


def run(args: argparse.Namespace) -> dict[str, Any]:
    items, reserved = phase_prompts(args.phases, args.phase_requests, args.eval_per_phase)
    started = time.monotonic()
    scorer = build_scorer(reserved, args)
    static_draft = args.static_draft
    if static_draft is None and any(arm != "scratch" for arm in args.arms):
        out = Path(tempfile.mkdtemp(prefix="borealis-shift-")) / "static"
        static_draft = train_static_draft(args.phases[0], args.static_minutes, out)
    runs = {arm: run_arm(arm, static_draft, items, scorer, args) for arm in args.arms}
    summary = summarize(args, items, runs, scorer)
    summary |= {
        "eval_traces_per_phase": {p: len(scorer.phase_rows(p)) for p in args.phases},
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "concurrency": args.concurrency,
        "think_seconds": args.think_seconds,
        "window": args.window,
        "depth": args.depth,
        "static_draft": str(static_draft),
        "static_minutes": args.static_minutes if args.static_draft is None else None,
        "trainer_env": bench_env(args),
        "threads": get_settings().threads,
        "run_seconds": round(time.monotonic() - started, 1),
    }
    if args.plot is not None:
        summary["plot"] = str(args.plot)
    return summary


def main(argv: list[str] | None = None) -> int:
    from worker.bench.shift_plot import plot

    args = parse_args(argv)
    result = run(args)
    emit(result, args.json)  # before plotting: a plotting failure must not lose the run
    if args.plot is not None:
        plot(result, args.plot)
    errors = sum(arm["errors"] for arm in result["arms"].values())
    return 0 if errors == 0 else 1
