"""``borealis bench shift``: does the flywheel follow a domain shift? Static vs online vs scratch.

Every arm gets its own private appliance (control plane, inference worker, Redis; plus a Celery
trainer for the learning arms) and the same requests, phase after phase (e.g. code, then prose,
then chat), sent through the OpenAI API with ``metadata.domain``:

- ``static``: a draft trained offline on the first phase only (``borealis draft train``), live
  from the start, no trainer: what a deployment without the flywheel serves.
- ``online``: the same draft live at the start, learning on, candidates promoted by the auto policy.
- ``scratch``: no draft at the start; the trainer builds a random-weight draft from the first
  traces and learns from there.

Acceptance and tokens/s come from the responses themselves (``spec_decode``, ``usage``), grouped
into windows of consecutive requests. After the phases, the online arm serves one more block of
identical traffic with learning paused and on, alternately, with promotion set to manual so the
draft stays fixed: serving throughput with learning on vs paused.
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from borealis.control_client import ControlPlaneClient
from borealis.processes import cli_argv
from borealis.settings import get_settings
from worker.bench.appliance import Appliance, private_appliance, wait_for_version
from worker.bench.clients import Outcome, prompt_request, run_all
from worker.bench.report import emit
from worker.workloads import DOMAINS, Prompt, build_prompts

ARMS = ("static", "online", "scratch")
THROUGHPUT_KEYS = ("serving_tok_s_learning_on", "serving_tok_s_learning_paused", "learning_on_over_paused")


@dataclass(frozen=True)
class Served:
    """One finished request as its client saw it, and the domain its prompt was drawn from."""

    outcome: Outcome
    domain: str

    @property
    def steps(self) -> int:
        return int(self.outcome.spec.get("num_steps", 0))

    @property
    def accepted(self) -> int:
        return int(self.outcome.spec.get("num_accepted_tokens", 0))

    @property
    def draft_version(self) -> str | None:
        return self.outcome.spec.get("draft_version")


ArmResult = tuple[list[Served], dict[str, Any]]  # outcomes in order, arm facts (promotions, ...)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="borealis bench shift", description=__doc__)
    parser.add_argument("--phases", default="code,prose,chat", help="comma-separated domains, in order")
    parser.add_argument("--requests-per-phase", type=int, default=48)
    parser.add_argument("--arms", default=",".join(ARMS), help=f"subset of {','.join(ARMS)}")
    parser.add_argument("--window", type=int, default=8, help="requests per reported window")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument(
        "--think-seconds",
        type=float,
        default=0.0,
        help="each client's pause between requests in the phases (0: saturate the worker)",
    )
    parser.add_argument("--static-draft", type=Path, default=None, help="offline draft (default: train one)")
    parser.add_argument("--static-minutes", type=float, default=10.0, help="offline training budget")
    parser.add_argument(
        "--throughput-requests", type=int, default=12, help="requests per paused / learning block"
    )
    parser.add_argument("--throughput-blocks", type=int, default=2, help="paused+learning block pairs")
    parser.add_argument(
        "--settle-seconds", type=float, default=20.0, help="wait after pausing/resuming before a block"
    )
    parser.add_argument("--candidate-every-rounds", type=int, default=2)
    parser.add_argument("--steps-per-round", type=int, default=10)
    parser.add_argument("--plot", type=Path, default=None, help="write a Plotly PNG of the curves here")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    args.phases = [p for p in args.phases.split(",") if p]
    args.arms = [a for a in args.arms.split(",") if a]
    unknown = [p for p in args.phases if p not in DOMAINS] + [a for a in args.arms if a not in ARMS]
    if unknown or not args.phases or not args.arms:
        parser.error(f"unknown or missing phases/arms: {unknown}")
    return args


def phase_prompts(phases: list[str], per_phase: int) -> list[Prompt]:
    """Distinct prompts of each phase, in phase order: the test split first (the static draft never
    trained on it), then the train split of the other domains (which it never saw either).

    No prompt repeats while any is left: a learning arm would otherwise score on memorised answers.
    """
    prompts = []
    for phase in phases:
        pool = build_prompts(phase, "test")
        if phase != phases[0]:
            pool += build_prompts(phase, "train")
        prompts += [pool[i % len(pool)] for i in range(per_phase)]
    return prompts


def serve(
    base_url: str, model: str, prompts: list[Prompt], args: argparse.Namespace, think_s: float = 0.0
) -> list[Served]:
    """Send the prompts in order through ``args.concurrency`` clients; the outcome of each, in order."""
    requests = [prompt_request(model, prompt, args.max_tokens) for prompt in prompts]
    outcomes = run_all(base_url, requests, args.concurrency, think_s)
    return [Served(o, prompts[o.index].domain) for o in outcomes]


def acceptance_length(served: list[Served]) -> float | None:
    """Tokens emitted per target step (accepted draft tokens + the target's own), over requests."""
    steps = sum(s.steps for s in served)
    return (steps + sum(s.accepted for s in served)) / steps if steps else None


def tokens_per_second(served: list[Served]) -> float | None:
    if not served:
        return None
    wall = max(s.outcome.finished for s in served) - min(s.outcome.started for s in served)
    return sum(s.outcome.completion_tokens for s in served) / wall if wall > 0 else None


def windows(served: list[Served], size: int) -> list[dict[str, Any]]:
    """Consecutive windows of ``size`` requests, never straddling a phase boundary."""
    out: list[dict[str, Any]] = []
    group: list[Served] = []
    for item in served:
        if group and (len(group) == size or item.domain != group[-1].domain):
            out.append(_window(group, len(out)))
            group = []
        group.append(item)
    if group:
        out.append(_window(group, len(out)))
    return out


def _window(group: list[Served], index: int) -> dict[str, Any]:
    value = acceptance_length(group)
    tok_s = tokens_per_second(group)
    return {
        "window": index,
        "requests": group[-1].outcome.index + 1,
        "domain": group[0].domain,
        "mean_acceptance_length": round(value, 4) if value is not None else None,
        "tok_s": round(tok_s, 2) if tok_s is not None else None,
        "draft_version": group[-1].draft_version,
        "errors": sum(1 for s in group if not s.outcome.ok),
    }


def recovery_requests(arm: list[dict[str, Any]], phases: list[str]) -> dict[str, int | None]:
    """Per shift: requests into the new phase until a window is back within 10% of the pre-shift level."""
    result: dict[str, int | None] = {}
    for before, after in itertools.pairwise(phases):
        pre = [w for w in arm if w["domain"] == before and w["mean_acceptance_length"] is not None]
        post = [w for w in arm if w["domain"] == after and w["mean_acceptance_length"] is not None]
        key = f"{before}->{after}"
        result[key] = None
        if not pre or not post:
            continue
        level = pre[-1]["mean_acceptance_length"]
        start = post[0]["requests"] - _window_len(arm, post[0])
        for window in post:
            if window["mean_acceptance_length"] >= 0.9 * level:
                result[key] = window["requests"] - start
                break
    return result


def _window_len(arm: list[dict[str, Any]], window: dict[str, Any]) -> int:
    index = window["window"]
    previous = arm[index - 1]["requests"] if index > 0 else 0
    return int(window["requests"]) - int(previous)


def phase_means(served: list[Served], phases: list[str]) -> dict[str, float | None]:
    return {phase: acceptance_length([s for s in served if s.domain == phase]) for phase in phases}


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a is not None and b else None


def train_static_draft(first_phase: str, minutes: float, out: Path) -> Path:
    command = cli_argv("draft", "train", "--workload", first_phase)
    command += ["--minutes", str(minutes), "--out", str(out)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return out


def _bench_env(args: argparse.Namespace) -> dict[str, str]:
    """Trainer cadence scaled to a benchmark of minutes, not a deployment of days."""
    return {
        "BOREALIS_TRAINER_CANDIDATE_EVERY_ROUNDS": str(args.candidate_every_rounds),
        "BOREALIS_TRAINER_STEPS_PER_ROUND": str(args.steps_per_round),
        "BOREALIS_TRAINER_IDLE_SECONDS": "1",
        "BOREALIS_DRIFT_WINDOW_REQUESTS": str(max(8, args.requests_per_phase // 3)),
        "BOREALIS_HEARTBEAT_SECONDS": "1",
        # Fixed speculation depth: the arms differ in their drafts, not in what contention does to
        # the adaptive depth, so acceptance length compares drafts.
        "BOREALIS_SPEC_ADAPTIVE": "false",
    }


def _learning(client: httpx.Client, paused: bool) -> None:
    action = "pause" if paused else "resume"
    reason = {"reason": "bench shift: throughput block"}
    client.post(f"/api/learning/{action}", json=reason).raise_for_status()


def throughput_blocks(
    appliance: Appliance, model: str, prompts: list[Prompt], args: argparse.Namespace
) -> dict[str, Any]:
    """Identical traffic with learning paused and on, alternately, the draft held fixed."""
    client = appliance.admin_client()
    client.put("/api/policy", json={"mode": "manual", "reason": "bench shift: hold draft"}).raise_for_status()
    block = [prompts[i * len(prompts) // args.throughput_requests] for i in range(args.throughput_requests)]
    tokens = {True: 0, False: 0}
    wall = {True: 0.0, False: 0.0}
    for _ in range(args.throughput_blocks):
        for paused in (True, False):
            _learning(client, paused)
            time.sleep(args.settle_seconds)  # the trainer notices between two optimizer steps
            started = time.monotonic()
            outcomes = serve(appliance.base_url, model, block, args)
            wall[paused] += time.monotonic() - started
            tokens[paused] += sum(s.outcome.completion_tokens for s in outcomes)
    _learning(client, False)
    paused_tok_s = round(tokens[True] / wall[True], 2)
    on_tok_s = round(tokens[False] / wall[False], 2)
    return {
        "serving_tok_s_learning_paused": paused_tok_s,
        "serving_tok_s_learning_on": on_tok_s,
        "learning_on_over_paused": _ratio(on_tok_s, paused_tok_s),
        "throughput_requests_per_mode": args.throughput_blocks * len(block),
    }


def run_arm(arm: str, static_draft: Path, prompts: list[Prompt], args: argparse.Namespace) -> ArmResult:
    settings = get_settings()
    learning = arm != "static"
    with private_appliance(settings, trainer=learning, extra_env=_bench_env(args)) as appliance:
        client = appliance.admin_client()
        policy = {"mode": "auto", "margin": 0.05, "reason": "bench shift"}
        client.put("/api/policy", json=policy).raise_for_status()
        if arm != "scratch":  # the first draft published is promoted: nothing live to compare with
            base, token = appliance.base_url, appliance.cluster_token
            version = ControlPlaneClient(base, token).publish(static_draft, source="offline").version
            wait_for_version(client, version)
        model = client.get("/v1/models").json()["data"][0]["id"]
        started = time.monotonic()
        served = serve(appliance.base_url, model, prompts, args, args.think_seconds)
        extra: dict[str, Any] = {"seconds": round(time.monotonic() - started, 1)}
        drafts = client.get("/api/drafts").json()
        extra["drafts_registered"] = len(drafts)
        extra["promotions"] = sum(1 for d in drafts if d.get("promoted_at"))
        audit = client.get("/api/audit", params={"action": "draft.auto_rollback"}).json()
        extra["auto_rollbacks"] = len(audit)
        if arm == "online":
            extra.update(throughput_blocks(appliance, model, prompts, args))
    return served, extra


def summarize(args: argparse.Namespace, results: dict[str, ArmResult]) -> dict[str, Any]:
    phases = args.phases
    shifted = phases[1:]
    arms: dict[str, Any] = {}
    means: dict[str, dict[str, float | None]] = {}
    for arm, (served, extra) in results.items():
        series = windows(served, args.window)
        means[arm] = phase_means(served, phases)
        arms[arm] = {
            "windows": series,
            "phase_mean_acceptance_length": {k: _round(v) for k, v in means[arm].items()},
            "shifted_mean_acceptance_length": _round(
                acceptance_length([s for s in served if s.domain in shifted])
            ),
            "tok_s": _round(tokens_per_second(served)),
            "errors": sum(1 for s in served if not s.outcome.ok),
            **{k: v for k, v in extra.items() if k not in THROUGHPUT_KEYS},
        }
    summary: dict[str, Any] = {"phases": phases, "requests_per_phase": args.requests_per_phase, "arms": arms}
    if "online" in arms:
        summary["recovery_requests"] = recovery_requests(arms["online"]["windows"], phases)
        for key in THROUGHPUT_KEYS:
            summary[key] = results["online"][1].get(key)
    if "static" in arms:
        static_shifted = arms["static"]["shifted_mean_acceptance_length"]
        if "online" in arms:
            summary["online_over_static_shifted"] = _ratio(
                arms["online"]["shifted_mean_acceptance_length"], static_shifted
            )
        if "scratch" in arms:
            summary["scratch_over_static"] = _ratio(
                acceptance_length(results["scratch"][0]), acceptance_length(results["static"][0])
            )
            summary["scratch_over_static_shifted"] = _ratio(
                arms["scratch"]["shifted_mean_acceptance_length"], static_shifted
            )
            first_phase = [w for w in arms["scratch"]["windows"] if w["domain"] == phases[0]]
            summary["scratch_reaches_static_first_phase_after_requests"] = _first_reaching(
                first_phase, means["static"][phases[0]]
            )
    return summary


def _first_reaching(series: list[dict[str, Any]], level: float | None) -> int | None:
    """Requests until a window's acceptance first reaches ``level`` (None: never in this run)."""
    if level is None:
        return None
    for window in series:
        value = window["mean_acceptance_length"]
        if value is not None and value >= level:
            return int(window["requests"])
    return None


def _round(value: float | None) -> float | None:
    return round(value, 4) if value is not None else None


def plot(summary: dict[str, Any], path: Path) -> None:
    """Acceptance length per window for every arm, phases shaded: the curves of the note."""
    import plotly.graph_objects as go

    figure = go.Figure()
    for arm, data in summary["arms"].items():
        series = data["windows"]
        figure.add_trace(
            go.Scatter(
                x=[w["requests"] for w in series],
                y=[w["mean_acceptance_length"] for w in series],
                mode="lines+markers",
                name=arm,
            )
        )
    per_phase = summary["requests_per_phase"]
    for index, phase in enumerate(summary["phases"]):
        figure.add_vrect(
            x0=index * per_phase,
            x1=(index + 1) * per_phase,
            fillcolor="grey" if index % 2 else "white",
            opacity=0.12,
            line_width=0,
            annotation_text=phase,
            annotation_position="top left",
        )
    figure.update_layout(
        title="Acceptance length through a domain shift (borealis bench shift)",
        xaxis_title="requests served",
        yaxis_title="mean acceptance length (tokens per target step)",
        template="plotly_white",
        width=1000,
        height=500,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.write_image(str(path))


def run(args: argparse.Namespace) -> dict[str, Any]:
    prompts = phase_prompts(args.phases, args.requests_per_phase)
    static_draft = args.static_draft
    if static_draft is None and any(arm != "scratch" for arm in args.arms):
        out = Path(tempfile.mkdtemp(prefix="borealis-shift-")) / "static"
        static_draft = train_static_draft(args.phases[0], args.static_minutes, out)
    results = {arm: run_arm(arm, static_draft, prompts, args) for arm in args.arms}
    summary = summarize(args, results)
    summary.update(
        {
            "max_tokens": args.max_tokens,
            "concurrency": args.concurrency,
            "think_seconds": args.think_seconds,
            "window": args.window,
            "static_draft": str(static_draft),
            "static_minutes": args.static_minutes if args.static_draft is None else None,
            "trainer": _bench_env(args),
            "threads": get_settings().threads,
        }
    )
    if args.plot is not None:
        summary["plot"] = str(args.plot)
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    emit(result, args.json)  # before plotting: a plotting failure must not lose the run
    if args.plot is not None:
        plot(result, args.plot)
    errors = sum(arm["errors"] for arm in result["arms"].values())
    return 0 if errors == 0 else 1
