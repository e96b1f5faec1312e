"""``borealis bench step``: how close a target-only decoding step comes to streaming its weights once.

Decoding one token reads every layer weight and the head once, so on a CPU it is bound by memory
bandwidth: the floor of a step is its weight bytes over the bandwidth. For each dtype this counts the
bytes a one-token step reads, times such steps (forward, head, argmax) from a fixed context, and
measures the read bandwidth (a sum over a buffer larger than the last-level cache, same threads)
before and after all steps. Each dtype's rounds run back to back, as a server holds one dtype's
weights: a probe or another dtype in between flushes the caches (on a host whose cache holds a
small model's weights, the steps run above the memory floor's speed; reported as measured).
Reported per dtype: ``step_over_floor`` (the issue's target: at most 1.25) with its range over
rounds, and bf16 over fp32 target-only (a ratio of medians).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from borealis.settings import get_settings
from worker.bench.report import emit
from worker.engine import native
from worker.engine.linear import AmxWeight, Int4Weight, NativeWeight, Weight
from worker.engine.llama import SERVING_DTYPES, KVCache, LlamaModel, causal_step_input


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="borealis bench step", description=__doc__)
    parser.add_argument(
        "--dtypes",
        default="float32,bfloat16,int4",
        help=f"of {sorted(SERVING_DTYPES)}; bf16 ones need AVX512-BF16 or the engine's kernels (AVX2)",
    )
    parser.add_argument("--context", type=int, default=128, help="tokens in the cache before the timed steps")
    parser.add_argument("--steps", type=int, default=32, help="one-token steps per dtype per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--buffer-mb", type=int, default=1024, help="bandwidth probe (above the L3's size)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--model", default=None, help="a Hugging Face directory (default: the served target)")
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args(argv)


def weight_bytes(weight: Weight) -> int:
    """Bytes a one-row product reads: the kernel's layout (int4: torch's packed codes and scales)."""
    if isinstance(weight, NativeWeight):
        return weight.weight.nbytes
    if isinstance(weight, AmxWeight):
        return weight.tiles.nbytes
    if isinstance(weight, Int4Weight):
        return weight.packed.nbytes + weight.scales_and_zeros.nbytes
    return weight.numel() * weight.element_size()


def step_bytes(model: LlamaModel) -> tuple[int, int]:
    """(layer bytes, head bytes) one decoding step streams; the embedding row read is negligible."""
    layers = sum(
        sum(weight_bytes(w) for w in (layer.qkv, layer.out, layer.gate_up, layer.down))
        + layer.input_norm.nbytes
        + layer.post_norm.nbytes
        for layer in model.layers
    )
    return layers, weight_bytes(model.lm_head) + model.norm.nbytes


def read_bandwidth(buffer: torch.Tensor, repeats: int = 3) -> float:
    """Bytes per second of the fastest of ``repeats`` sums over ``buffer``."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        buffer.sum()
        best = min(best, time.perf_counter() - started)
    return buffer.nbytes / best


class Stepper:
    """One dtype's target with its cache filled to ``context``; each call times ``steps`` steps."""

    def __init__(self, model: LlamaModel, context: int, steps: int):
        self.model, self.context, self.steps = model, context, steps
        self.cache = KVCache(model.spec, model.spec.num_layers, 1, context + steps + 8, model.dtype)
        self.generator = torch.Generator().manual_seed(0)
        prompt = torch.randint(0, model.spec.vocab_size, (1, context), generator=self.generator)
        model.forward(causal_step_input(prompt, [0]), self.cache, prefill=True)
        self.step(context)  # warm the kernels

    def step(self, length: int) -> int:
        token = torch.randint(0, self.model.spec.vocab_size, (1, 1), generator=self.generator)
        hidden, _ = self.model.forward(causal_step_input(token, [length]), self.cache)
        return int(self.model.logits(hidden[:, -1]).argmax())

    def time_steps(self) -> float:
        """Median seconds of ``steps`` one-token steps, extending the context from ``context``."""
        times = []
        for i in range(self.steps):
            started = time.perf_counter()
            self.step(self.context + i)
            times.append(time.perf_counter() - started)
        return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = get_settings()
    threads = args.threads or settings.threads
    torch.set_num_threads(threads)
    native.enable(settings.native_kernels, settings.native_amx)
    model_dir = Path(args.model) if args.model else settings.resolved_model_path
    wanted = args.dtypes.split(",")
    unknown = [name for name in wanted if name not in SERVING_DTYPES]
    if unknown:
        raise SystemExit(f"unknown dtypes {unknown}: want some of {sorted(SERVING_DTYPES)}")
    dtypes = [name for name in wanted if name == "float32" or native.serves_low_precision()]
    started = time.monotonic()
    steppers = {
        name: Stepper(LlamaModel.load_named(model_dir, name), args.context, args.steps) for name in dtypes
    }
    buffer = torch.ones(args.buffer_mb * 2**20 // 4)
    bandwidth = [read_bandwidth(buffer)]
    del buffer  # probed before and after the steps, never between: a probe flushes the caches
    step_s = {name: [steppers[name].time_steps() for _ in range(args.rounds)] for name in dtypes}
    buffer = torch.ones(args.buffer_mb * 2**20 // 4)
    bandwidth.append(read_bandwidth(buffer))
    arms: dict[str, Any] = {}
    for name in dtypes:
        layers, head = step_bytes(steppers[name].model)
        ratios = [s * statistics.median(bandwidth) / (layers + head) for s in step_s[name]]
        arms[name] = {
            "kernels": native.kernels_name(steppers[name].model.dtype),  # int4: its head's and prefill's
            "layer_bytes": layers,
            "head_bytes": head,
            "floor_ms": round((layers + head) / statistics.median(bandwidth) * 1000, 2),
            "step_ms": round(statistics.median(step_s[name]) * 1000, 2),
            "step_ms_range": [round(min(step_s[name]) * 1000, 2), round(max(step_s[name]) * 1000, 2)],
            "step_over_floor": round(statistics.median(ratios), 3),
            "step_over_floor_range": [round(min(ratios), 3), round(max(ratios), 3)],
        }
    result: dict[str, Any] = {
        "model": str(model_dir),
        "threads": threads,
        "context": args.context,
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        "bandwidth_buffer_mb": args.buffer_mb,
        "bandwidth_gb_s": round(statistics.median(bandwidth) / 1e9, 2),
        "bandwidth_gb_s_range": [round(min(bandwidth) / 1e9, 2), round(max(bandwidth) / 1e9, 2)],
        "dtypes": arms,
        "skipped": [name for name in wanted if name not in dtypes],
        "seconds": round(time.monotonic() - started, 1),
    }
    if "float32" in step_s and "bfloat16" in step_s:
        fp32, bf16 = statistics.median(step_s["float32"]), statistics.median(step_s["bfloat16"])
        result["bf16_over_fp32_target_only"] = round(fp32 / bf16, 3)
    emit(result, args.json)
    return 0
