"""``borealis bench swap``: latency and failures under continuous traffic while drafts are swapped.

Starts a private appliance (control plane, one inference worker, Redis) on free ports, publishes
two day-0 drafts for the target, then runs C concurrent clients: first a baseline phase on the
first draft, then a phase of alternating promotions and rollbacks. Every request's outcome is
kept; ``swap_seconds`` is from the operator call until every worker acknowledges the version.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from borealis.control_client import ControlPlaneClient
from borealis.processes import rss_kib
from borealis.settings import get_settings
from worker.bench.appliance import Appliance, make_day0_drafts, private_appliance, wait_for_version
from worker.bench.clients import ClientPool, Outcome, Request, RequestSource
from worker.bench.report import emit

PROMPTS = [
    "def fibonacci(n):",
    "The history of the printing press",
    "Write a short note to a colleague about the meeting.",
    "import os\nimport sys\n\ndef main():",
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="borealis bench swap", description=__doc__)
    parser.add_argument("--swaps", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--baseline-seconds", type=float, default=30.0)
    parser.add_argument("--gap-seconds", type=float, default=3.0, help="traffic between two swaps")
    parser.add_argument("--json", type=Path, required=True)
    return parser.parse_args(argv)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def completions(model: str, max_tokens: int) -> RequestSource:
    """An endless rotation over PROMPTS, greedy."""

    def source(index: int, _client: int) -> Request:
        body = {
            "model": model,
            "prompt": PROMPTS[index % len(PROMPTS)],
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        return Request("/v1/completions", body)

    return source


def _summary(outcomes: list[Outcome]) -> dict[str, Any]:
    latencies_ms = [o.latency_s * 1000 for o in outcomes if o.ok]
    return {
        "requests": len(outcomes),
        "failed_requests": sum(1 for o in outcomes if not o.ok),
        "p50_ms": percentile(latencies_ms, 0.5),
        "p99_ms": percentile(latencies_ms, 0.99),
    }


def _worker_rss_mib(appliance: Appliance) -> float:
    """Resident memory of the inference worker(s), summed: a leak per swap shows as a slope."""
    pids = [pid for name, pid in appliance.pids().items() if name.startswith("inference-worker")]
    return round(sum(rss_kib(pid) or 0 for pid in pids) / 1024, 1)


def _growth(series: list[float]) -> float | None:
    """Growth over the second half of the swaps: the first ones are warm-up (allocator, caches)."""
    if len(series) < 4:
        return None
    return round(series[-1] - series[len(series) // 2], 1)


def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = get_settings()
    model_dir = settings.resolved_model_path
    with private_appliance(settings, extra_env={"BOREALIS_AUTO_ROLLBACK": "false"}) as appliance:
        client = appliance.admin_client()
        base, cluster = appliance.base_url, appliance.cluster_token
        client.put("/api/policy", json={"mode": "manual", "reason": "bench swap"}).raise_for_status()
        first_dir, second_dir = make_day0_drafts(model_dir, appliance.home / "drafts")
        first = ControlPlaneClient(base, cluster).publish(first_dir, source="upload").version
        second = ControlPlaneClient(base, cluster).publish(second_dir, source="upload").version
        client.post(f"/api/drafts/{first}/approve", json={"reason": "bench baseline"}).raise_for_status()
        wait_for_version(client, first)
        model = client.get("/v1/models").json()["data"][0]["id"]
        traffic = ClientPool(base, args.concurrency, completions(model, args.max_tokens)).start()
        time.sleep(args.baseline_seconds)
        swaps_started = time.monotonic()
        swap_seconds = []
        rss_after_swap: list[float] = []
        targets = [second, first]
        for index in range(args.swaps):
            target = targets[index % 2]
            action = "approve" if index == 0 else "rollback"
            reason = {"reason": f"bench swap {index}"}
            client.post(f"/api/drafts/{target}/{action}", json=reason).raise_for_status()
            swap_seconds.append(wait_for_version(client, target))
            rss_after_swap.append(_worker_rss_mib(appliance))
            time.sleep(args.gap_seconds)
        swaps_ended = time.monotonic()
        outcomes = traffic.stop()
    before = [o for o in outcomes if o.started < swaps_started]
    during = [o for o in outcomes if swaps_started <= o.started <= swaps_ended]
    summary_before, summary_during = _summary(before), _summary(during)
    p99_before, p99_during = summary_before["p99_ms"], summary_during["p99_ms"]
    return {
        "requests": len(outcomes),
        "failed_requests": sum(1 for o in outcomes if not o.ok),
        "p50_ms_before": summary_before["p50_ms"],
        "p99_ms_before": p99_before,
        "p50_ms_during": summary_during["p50_ms"],
        "p99_ms_during": p99_during,
        "requests_before": summary_before["requests"],
        "requests_during": summary_during["requests"],
        "p99_during_over_before": p99_during / p99_before if p99_during and p99_before else None,
        "swap_seconds": [round(s, 3) for s in swap_seconds],
        "swap_seconds_mean": round(statistics.fmean(swap_seconds), 3) if swap_seconds else None,
        "swap_seconds_max": round(max(swap_seconds), 3) if swap_seconds else None,
        "worker_rss_mib_after_each_swap": rss_after_swap,
        "worker_rss_growth_mib_second_half": _growth(rss_after_swap),
        "swaps": args.swaps,
        "concurrency": args.concurrency,
        "max_tokens": args.max_tokens,
        "model": str(model_dir),
        "threads": settings.threads,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    emit(result, args.json)
    return 0 if result["failed_requests"] == 0 else 1
