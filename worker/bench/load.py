"""``borealis bench load``: concurrent clients, streaming and not, while learning and swaps run.

Reports errors by status, latency percentiles, tokens/s and the resident memory of every process
over the run: its peak, and its growth after warm-up (the first fifth of the run) in the mean and
in the floor (the lowest reading), so a leak shows as a number, not a feeling. A trainer's memory
follows its rounds, not the clock, so its floor is also reported per round: the lowest reading
between one round checkpoint and the next.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

from borealis.control_client import ControlPlaneClient
from borealis.processes import rss_kib
from borealis.settings import get_settings
from worker.bench.appliance import make_day0_drafts, private_appliance, wait_for_version
from worker.bench.clients import ClientPool, Request, RequestSource
from worker.bench.hostile import HostileClient
from worker.bench.report import emit
from worker.bench.swap import PROMPTS, percentile
from worker.training.checkpoint import LATEST


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="borealis bench load", description=__doc__)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--swap-every", type=float, default=30.0, help="seconds between draft swaps; 0: none")
    parser.add_argument(
        "--replay-records",
        type=int,
        default=None,
        help="trainer replay capacity (default: the setting); small caps fill during warm-up",
    )
    parser.add_argument(
        "--feature-cache-tokens", type=int, default=None, help="trainer feature cache (default: the setting)"
    )
    parser.add_argument(
        "--trainer-steps",
        type=int,
        default=None,
        help="optimizer steps per training round (default: the setting); fewer steps, more rounds to compare",
    )
    parser.add_argument(
        "--hostile",
        action="store_true",
        help="add a hostile client: degenerate sampling, label floods, oversized bodies, disconnects",
    )
    parser.add_argument("--json", type=Path, required=True)
    return parser.parse_args(argv)


def chats(model: str, max_tokens: int) -> RequestSource:
    """Endless chat requests; odd clients stream (SSE); every third request samples (temperature 0.8)."""

    def source(index: int, client: int) -> Request:
        body = {
            "model": model,
            "max_tokens": max_tokens,
            "temperature": 0.8 if index % 3 == 0 else 0,
            "messages": [{"role": "user", "content": PROMPTS[index % len(PROMPTS)]}],
        }
        return Request("/v1/chat/completions", body, stream=client % 2 == 1)

    return source


def memory_report(samples: dict[str, list[tuple[float, int]]], duration_s: float) -> dict[str, Any]:
    report = {}
    for name, series in samples.items():
        if not series:
            continue
        warm = [kib for t, kib in series if t >= duration_s * 0.2]
        early = warm[: max(1, len(warm) // 4)]
        late = warm[-max(1, len(warm) // 4) :]
        report[name] = {
            "peak_rss_mib": round(max(kib for _, kib in series) / 1024, 1),
            "rss_after_warmup_mib": round(statistics.fmean(early) / 1024, 1),
            "rss_at_end_mib": round(statistics.fmean(late) / 1024, 1),
            "growth_after_warmup_mib": round((statistics.fmean(late) - statistics.fmean(early)) / 1024, 1),
            # A trainer's RSS rises and falls with its rounds; its floor between rounds is what leaks.
            "floor_growth_after_warmup_mib": round((min(late) - min(early)) / 1024, 1),
        }
    return report


def _latest_round(checkpoints: Path) -> int | None:
    """The trainer's last checkpointed round, from the pointer its checkpoints are published by."""
    try:
        return int((checkpoints / LATEST).read_text().strip().removeprefix("round-"))
    except (OSError, ValueError):
        return None


class RoundFloors:
    """The trainer's lowest RSS in each interval between two round checkpoints."""

    def __init__(self, checkpoints: Path):
        self.checkpoints = checkpoints
        self.rounds: list[dict[str, float]] = []
        self._round = _latest_round(checkpoints)
        self._floor_kib: int | None = None

    def observe(self, t_s: float, kib: int) -> None:
        self._floor_kib = kib if self._floor_kib is None else min(self._floor_kib, kib)
        latest = _latest_round(self.checkpoints)
        if latest is not None and latest != self._round:
            floor_mib = round(self._floor_kib / 1024, 1)
            self.rounds.append({"round": latest, "t_s": round(t_s, 1), "floor_rss_mib": floor_mib})
            self._round, self._floor_kib = latest, None


def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = get_settings()
    caps = {
        "BOREALIS_REPLAY_MAX_RECORDS": args.replay_records,
        "BOREALIS_TRAINER_FEATURE_CACHE_TOKENS": args.feature_cache_tokens,
        "BOREALIS_TRAINER_STEPS_PER_ROUND": args.trainer_steps,
    }
    extra_env = {name: str(value) for name, value in caps.items() if value is not None}
    with private_appliance(settings, trainer=True, extra_env=extra_env) as appliance:
        admin = appliance.admin_client()
        admin.put("/api/policy", json={"mode": "manual", "reason": "bench load"}).raise_for_status()
        drafts = [
            ControlPlaneClient(appliance.base_url, appliance.cluster_token)
            .publish(path, source="upload")
            .version
            for path in make_day0_drafts(settings.resolved_model_path, appliance.home / "drafts")
        ]
        admin.post(f"/api/drafts/{drafts[0]}/approve", json={"reason": "bench load"}).raise_for_status()
        wait_for_version(admin, drafts[0])
        model = admin.get("/v1/models").json()["data"][0]["id"]
        clients = ClientPool(appliance.base_url, args.clients, chats(model, args.max_tokens), timeout_s=300)
        pids = appliance.pids()
        samples: dict[str, list[tuple[float, int]]] = {name: [] for name in pids}
        trainer_rounds = RoundFloors(appliance.home / "trainer" / "checkpoints")
        duration_s = args.minutes * 60
        started = time.monotonic()
        hostile = HostileClient(appliance.base_url, model) if args.hostile else None
        clients.start()
        if hostile is not None:
            hostile.start()
        next_swap, swaps = started + args.swap_every, 0
        while (now := time.monotonic()) - started < duration_s:
            for name, pid in pids.items():
                kib = rss_kib(pid)
                if kib is not None:
                    samples[name].append((now - started, kib))
                    if name == "training-worker":
                        trainer_rounds.observe(now - started, kib)
            if args.swap_every and now >= next_swap:
                target = drafts[(swaps + 1) % 2]
                action = "approve" if swaps == 0 else "rollback"
                admin.post(f"/api/drafts/{target}/{action}", json={"reason": "bench load"}).raise_for_status()
                swaps += 1
                next_swap = now + args.swap_every
            time.sleep(1.0)
        outcomes = clients.stop()
        hostile_outcomes = hostile.stop() if hostile is not None else {}
        elapsed = time.monotonic() - started
        versions = admin.get("/api/drafts").json()
        metrics = admin.get("/metrics").text
    statuses = Counter(o.status for o in outcomes)
    latencies_ms = [o.latency_s * 1000 for o in outcomes if o.ok]
    return {
        "requests": len(outcomes),
        "errors_by_status": {s: c for s, c in statuses.items() if s != "200"},
        "server_errors": sum(count for status, count in statuses.items() if status.startswith("5"))
        + (hostile.server_errors if hostile is not None else 0),
        "hostile": hostile_outcomes,
        "domain_labels_in_metrics": len(set(re.findall(r'domain="([^"]+)"', metrics))),
        "p50_ms": percentile(latencies_ms, 0.5),
        "p99_ms": percentile(latencies_ms, 0.99),
        "tokens_per_s": round(sum(o.completion_tokens for o in outcomes) / elapsed, 2),
        "swaps": swaps,
        "trainer_candidates": sum(1 for version in versions if version["source"] == "trainer"),
        "memory": memory_report(samples, elapsed),
        "trainer_round_floors": trainer_rounds.rounds,
        "trainer_caps": {
            "replay_max_records": args.replay_records or settings.replay_max_records,
            "feature_cache_tokens": args.feature_cache_tokens or settings.trainer_feature_cache_tokens,
            "steps_per_round": args.trainer_steps or settings.trainer_steps_per_round,
        },
        "clients": args.clients,
        "minutes": args.minutes,
        "max_tokens": args.max_tokens,
        "threads": settings.threads,
        "model": str(settings.resolved_model_path),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    emit(result, args.json)
    return 0 if result["server_errors"] == 0 else 1
