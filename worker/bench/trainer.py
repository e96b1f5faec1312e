"""``borealis bench trainer``: optimizer steps per trainer CPU-minute, shipped features vs prefill.

Serves the workload's train split through the speculative engine (day-0 draft, features recorded),
exports the records and their features through the real trace exporter into Redis, and reads them
back with the trainer's consumer: the same records, keys and blobs a live trainer sees. Then two
arms replay one schedule of online rounds (``--new-per-round`` new traces arrive, then
``--steps-per-round`` optimizer steps on batches drawn from the replay buffer), each from the same
day-0 weights, in one process:

- ``prefill``: every example's target view comes from a target prefill (the trainer without the
  side store, or once features expired);
- ``features``: from the shipped features, through the target's head alone.

Both arms see identical batches; CPU time is the process's (all threads). Reported per arm: CPU
seconds, steps per CPU-minute, and the CPU seconds spent building examples; the paired ratio of
per-round steps per CPU-minute with a bootstrap interval; and how closely the two arms' examples
agree (target argmax identical, top-1 log-probability difference).
"""

from __future__ import annotations

import argparse
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import redis
import torch

from borealis.settings import Settings, get_settings
from borealis.tracebus import TraceBusConfig
from borealis.wire import TraceRecord
from worker.bench.report import emit
from worker.bench.served_traces import serve_traces
from worker.draft.model import new_draft
from worker.draft.runner import DraftRunner
from worker.draft.shadow import paired_interval
from worker.draft.trainer import DraftTrainer, TrainConfig
from worker.draft.vocab import DraftVocab
from worker.engine.llama import LlamaModel
from worker.engine.tracelog import wire_steps
from worker.traces.consumer import TraceConsumer
from worker.traces.exporter import TraceExporter
from worker.traces.features import encode_features, feature_reader
from worker.traces.replay import ReplayBuffer, record_tokens
from worker.training.examples_cache import ExampleCache
from worker.workloads import build_prompts, encode_prompt

ARMS = ("prefill", "features")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="borealis bench trainer", description=__doc__)
    parser.add_argument("--workload", choices=["code", "prose", "chat", "mixed"], default="mixed")
    parser.add_argument("--requests", type=int, default=48, help="train-split requests served for traces")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--new-per-round", type=int, default=8, help="traces arriving per round")
    parser.add_argument("--steps-per-round", type=int, default=None, help="default: the trainer's setting")
    parser.add_argument("--redis-url", default=None, help="default: BOREALIS_REDIS_URL")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.requests < args.new_per_round or args.new_per_round < 1:
        parser.error("--requests must be at least --new-per-round, which must be positive")
    return args


def served_records(
    target: LlamaModel, bus: TraceBusConfig, args: argparse.Namespace
) -> tuple[list[TraceRecord], int]:
    """Serve, export through the real exporter, read back through the trainer's consumer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(get_settings().resolved_model_path)
    eos = (tokenizer.eos_token_id,) if tokenizer.eos_token_id is not None else ()
    prompts = build_prompts(args.workload, "train", args.requests)
    ids = [encode_prompt(p, tokenizer) for p in prompts]
    vocab = DraftVocab.from_sequences(ids, get_settings().draft_vocab_size, target.spec.vocab_size)
    runner = DraftRunner(new_draft(target.spec, vocab, seed=args.seed), target.embed, "day-0")
    served = serve_traces(target, runner, ids, args.max_new_tokens, eos, record_features=True)
    exporter = TraceExporter(bus)
    now = time.time()
    for index, (prompt, trace) in enumerate(zip(prompts, served, strict=True)):
        if not trace.output or trace.features is None:
            continue
        record = TraceRecord(
            request_id=f"bench-{index}",
            model="bench",
            domain=prompt.domain,
            domain_source="request",
            started_at=now,
            finished_at=now,
            finish_reason="length",
            prompt_ids=trace.prompt,
            output_ids=trace.output,
            steps=wire_steps(trace.steps, len(trace.output)),
        )
        exporter.export(record, encode_features(trace.features.numpy()))
    exporter.close(timeout_s=60)
    consumer = TraceConsumer(bus, "bench-trainer")
    records: list[TraceRecord] = []
    while batch := consumer.read(count=256, block_ms=500):
        records += [delivery.record for delivery in batch]
    consumer.close()
    return records, exporter.stats().features.stored


def schedule(
    records: list[TraceRecord], settings: Settings, args: argparse.Namespace
) -> list[list[list[TraceRecord]]]:
    """Rounds of batches, drawn once so both arms train on the same examples in the same order."""
    trainer = settings.trainer
    replay = ReplayBuffer(trainer.replay_max_records, trainer.replay_max_tokens, 3600.0, seed=args.seed)
    steps = args.steps_per_round or trainer.steps_per_round
    rounds = []
    for start in range(0, len(records) - args.new_per_round + 1, args.new_per_round):
        for record in records[start : start + args.new_per_round]:
            replay.add(record)
        per_step = max(1, trainer.batch_tokens // max(1, replay.tokens // len(replay)))
        rounds.append(
            [
                [r for r in replay.sample(per_step) if record_tokens(r) <= trainer.batch_tokens]
                or replay.sample(1)
                for _ in range(steps)
            ]
        )
    return rounds


def run_arm(
    arm: str,
    target: LlamaModel,
    vocab: DraftVocab,
    rounds: list[list[list[TraceRecord]]],
    bus: TraceBusConfig,
) -> dict[str, Any]:
    settings = get_settings().trainer
    reader = feature_reader(bus, 4 * target.spec.hidden_size) if arm == "features" else None
    cache = ExampleCache(target, settings.feature_cache_tokens, reader)
    trainer = DraftTrainer(
        new_draft(target.spec, vocab),
        target.embed,
        TrainConfig(lr=settings.lr, batch_tokens=settings.batch_tokens, bf16=settings.bf16),
    )
    per_round, building = [], 0.0
    total_start = time.process_time()
    for batches in rounds:
        round_start = time.process_time()
        for records in batches:
            build_start = time.process_time()
            examples = [cache.get(record, vocab) for record in records]
            building += time.process_time() - build_start
            trainer.train_step(examples)
        per_round.append(len(batches) / ((time.process_time() - round_start) / 60))
    cpu = time.process_time() - total_start
    return {
        "cpu_seconds": round(cpu, 1),
        "steps": trainer.steps_done,
        "steps_per_cpu_minute": round(trainer.steps_done / (cpu / 60), 2),
        "example_build_cpu_seconds": round(building, 1),
        "examples_from_features": cache.sources.from_features,
        "examples_by_prefill": cache.sources.by_prefill,
        "per_round_steps_per_cpu_minute": [round(value, 2) for value in per_round],
    }


def agreement(
    target: LlamaModel, vocab: DraftVocab, records: list[TraceRecord], bus: TraceBusConfig
) -> dict[str, float]:
    """Examples from features against examples from a prefill, over every record."""
    shipped = ExampleCache(target, 0, feature_reader(bus, 4 * target.spec.hidden_size))
    recomputed = ExampleCache(target, 0)
    same = total = 0
    worst = 0.0
    for record in records:
        a, b = shipped.build(record, vocab), recomputed.build(record, vocab)
        rows = len(a)
        same += int((a.target_argmax == b.target_argmax[:rows]).sum())
        total += rows
        worst = max(worst, float((a.target_logp[:, 0] - b.target_logp[:rows, 0]).abs().max()))
    return {"argmax_identical_share": same / total, "max_top1_logp_difference": worst}


def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = get_settings()
    torch.set_num_threads(settings.resolved_trainer_threads)
    torch.manual_seed(args.seed)
    target = LlamaModel.load(settings.resolved_model_path)
    prefix = f"{settings.redis_key_prefix}-bench-trainer-{uuid.uuid4().hex[:8]}"
    url = args.redis_url or settings.redis_url
    if not url:
        raise SystemExit("bench trainer needs a Redis: set BOREALIS_REDIS_URL or pass --redis-url")
    bus = TraceBusConfig.from_settings(
        settings.model_copy(update={"redis_url": url, "redis_key_prefix": prefix})
    )
    try:
        records, stored = served_records(target, bus, args)
        vocab = DraftVocab.from_sequences(
            (r.prompt_ids + r.output_ids for r in records), settings.draft_vocab_size, target.spec.vocab_size
        )
        rounds = schedule(records, settings, args)
        arms = {arm: run_arm(arm, target, vocab, rounds, bus) for arm in ARMS}
        ratio_low, ratio_high = paired_interval(
            [np.log(v) for v in arms["features"]["per_round_steps_per_cpu_minute"]],
            [np.log(v) for v in arms["prefill"]["per_round_steps_per_cpu_minute"]],
        )
        quality = agreement(target, vocab, records, bus)
    finally:
        client = redis.Redis.from_url(url)
        for key in client.scan_iter(match=f"{prefix}*", count=500):
            client.delete(key)
        client.close()
    speedup = arms["features"]["steps_per_cpu_minute"] / arms["prefill"]["steps_per_cpu_minute"]
    return {
        "workload": args.workload,
        "traces": len(records),
        "feature_blobs_stored": stored,
        "trace_tokens": sum(record_tokens(r) for r in records),
        "rounds": len(rounds),
        "steps_per_round": len(rounds[0]) if rounds else 0,
        "new_per_round": args.new_per_round,
        "arms": arms,
        "features_over_prefill_steps_per_cpu_minute": round(speedup, 3),
        "per_round_ratio_95ci": [round(float(np.exp(ratio_low)), 3), round(float(np.exp(ratio_high)), 3)],
        "example_agreement": quality,
        "threads": settings.resolved_trainer_threads,
        "batch_tokens": settings.trainer.batch_tokens,
        "feature_cache_tokens": settings.trainer.feature_cache_tokens,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    emit(run(args), args.json)
    return 0
