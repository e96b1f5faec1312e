"""``borealis bench speedup``: HF greedy, HF prompt lookup, this engine target-only and speculative.

All arms run in one process on the same test-split prompts and thread count; greedy outputs of
every arm are compared token by token with HF greedy decoding. ``--through-api`` adds what a user
gets: the same prompts and draft served afterwards by a private appliance through the OpenAI API
(``through_api``: tokens/s, its ratio to the in-process speculative arm run again just before it in
each of ``--api-rounds`` rounds, identical completions, and where a request's time went: the worker's
prefill and decoding against the rest of the client's wall time, beside the in-process engine's own).
``--against-onednn`` adds the engine's target-only and speculative arms with oneDNN products in place
of the engine's own kernels (bf16, int4's bf16 head and prefill, or fp32), run between two passes of the
native arms (A-B-A), so what the kernel buys is a ratio within one run; ``--against-vector`` does the
same with the kernel's AVX-512 vector products in place of its AMX tiles (CPUs with AMX). The engine's
kernels follow ``BOREALIS_NATIVE_KERNELS`` and ``BOREALIS_NATIVE_AMX`` as a worker's do (``kernels``
says which served).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from borealis.settings import get_settings
from worker.bench.api_arm import run_api_arm
from worker.bench.report import emit
from worker.bench.shift_eval import paired_ratio_interval
from worker.draft.io import load_draft
from worker.draft.model import Eagle3Draft, new_draft
from worker.draft.runner import DraftRunner
from worker.draft.vocab import DraftVocab
from worker.engine import native
from worker.engine.engine import DraftRule, EngineConfig, SpecConfig, SpecEngine
from worker.engine.llama import SERVING_DTYPES, LlamaModel
from worker.engine.types import GenerationRequest, SamplingParams, SpecStats
from worker.workloads import build_prompts, encode_prompt

PROMPT_LOOKUP_TOKENS = 10


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="borealis bench speedup", description=__doc__)
    parser.add_argument("--workload", choices=["code", "prose", "chat", "mixed"], default="code")
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument(
        "--draft", default="random", help="'random' (day-0 draft) or a draft artifact directory"
    )
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--mode", choices=["chain", "tree"], default="tree")
    parser.add_argument(
        "--no-ngram", action="store_true", help="draft-only speculation: acceptance shows the draft alone"
    )
    parser.add_argument(
        "--against-random",
        action="store_true",
        help="add a speculative arm with a day-0 (random) draft, same settings: does the trained draft pay?",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="with --against-random: run the trained and the random arm this many times each, alternating "
        "which goes first, and report the pooled ratio, each repeat's and a paired interval",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="add sampled arms at this temperature (seeded): the draft-probability rule and the "
        "point-mass rule, their acceptance lengths beside the greedy one",
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--dtype",
        choices=list(SERVING_DTYPES),
        default="float32",
        help="the engine arms' dtype; HF arms stay float32, the reference greedy output",
    )
    parser.add_argument(
        "--through-api",
        action="store_true",
        help="add an arm serving the same prompts and draft through a private appliance's OpenAI API",
    )
    parser.add_argument("--api-trainer", action="store_true", help="run a training worker in that appliance")
    parser.add_argument(
        "--api-rounds",
        type=int,
        default=2,
        help="with --through-api: rounds of the in-process speculative arm then the API arm, paired",
    )
    parser.add_argument(
        "--against-onednn",
        action="store_true",
        help="add target-only and speculative arms with oneDNN products instead of the engine's compiled "
        "kernels (native arms run again after them)",
    )
    parser.add_argument(
        "--against-vector",
        action="store_true",
        help="bfloat16/int4 on AMX CPUs: add the same arms with the kernel's vector bf16 products instead "
        "of AMX tiles",
    )
    parser.add_argument("--model", default=None, help="HF model directory (default: the configured model)")
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args(argv)
    if min(args.requests, args.max_new_tokens, args.batch, args.repeats, args.api_rounds) < 1:
        parser.error("--requests, --max-new-tokens, --batch, --repeats and --api-rounds must be positive")
    if args.against_vector and args.dtype == "float32":
        parser.error("--against-vector compares bf16 kernels: use --dtype bfloat16 or int4")
    if args.against_onednn and args.against_vector:
        parser.error("one kernel comparison per run: --against-onednn or --against-vector")
    return args


def run_engine(
    engine: SpecEngine, prompts: list[list[int]], params: SamplingParams, seeded: bool = False
) -> tuple[list[list[int]], list[SpecStats], float]:
    """Every prompt through the engine (request ``i`` seeded with ``i`` when ``seeded``)."""
    started = time.perf_counter()
    for i, prompt in enumerate(prompts):
        engine.submit(GenerationRequest(str(i), prompt, replace(params, seed=i) if seeded else params))
    outputs: list[list[int]] = [[] for _ in prompts]
    stats: list[SpecStats] = [SpecStats() for _ in prompts]
    while engine.has_work():
        for event in engine.step():
            outputs[int(event.request_id)].extend(event.token_ids)
            if event.stats is not None:
                stats[int(event.request_id)] = event.stats
    return outputs, stats, time.perf_counter() - started


def prefix_share(outputs: list[list[int]], reference: list[list[int]]) -> float:
    """Share of reference tokens reproduced before the first difference, pooled over requests."""
    same = 0
    for out, ref in zip(outputs, reference, strict=True):
        agree = next(
            (i for i, (a, b) in enumerate(zip(out, ref, strict=False)) if a != b), min(len(out), len(ref))
        )
        same += agree
    return same / max(1, sum(len(ref) for ref in reference))


def run_hf(
    generate: Callable[[list[int]], list[int]], prompts: list[list[int]]
) -> tuple[list[list[int]], float]:
    started = time.perf_counter()
    outputs = [generate(prompt) for prompt in prompts]
    return outputs, time.perf_counter() - started


def hf_generator(model: Any, max_new: int, eos: int, lookup: int | None) -> Callable[[list[int]], list[int]]:
    def generate(prompt: list[int]) -> list[int]:
        extra = {"prompt_lookup_num_tokens": lookup} if lookup else {}
        with torch.no_grad():
            out = model.generate(
                torch.tensor([prompt]),
                attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                max_new_tokens=max_new,
                do_sample=False,
                eos_token_id=eos,
                pad_token_id=eos,
                **extra,
            )
        return list(out[0, len(prompt) :].tolist())

    return generate


def acceptance_length(stats: list[SpecStats]) -> float:
    """Tokens per target step over all requests (accepted proposals + the target's own token)."""
    steps = sum(s.num_steps for s in stats)
    return (sum(s.num_accepted_tokens for s in stats) + steps) / max(steps, 1)


def draft_share(stats: list[SpecStats]) -> float | None:
    """Share of accepted tokens the learned draft proposed (a token both proposed counts for both)."""
    accepted = sum(s.num_accepted_tokens for s in stats)
    return sum(s.accepted_from_draft for s in stats) / accepted if accepted else None


def make_draft(arg: str, target: LlamaModel, train_ids: list[list[int]]) -> tuple[Eagle3Draft, str]:
    """The draft and its version name: a day-0 draft, or an artifact."""
    if arg == "random":
        vocab = DraftVocab.from_sequences(train_ids, get_settings().draft_vocab_size, target.spec.vocab_size)
        return new_draft(target.spec, vocab), "random"
    draft, manifest = load_draft(arg)
    return draft, manifest.version or Path(arg).name


def request_rows(outputs: list[list[int]], stats: list[SpecStats]) -> np.ndarray:
    """[requests, 2] (tokens, decoding seconds) of each request: the rows a paired tok/s interval draws."""
    return np.asarray([[len(out), s.decode_seconds] for out, s in zip(outputs, stats, strict=True)])


def against_random(
    trained: SpecEngine,
    random: SpecEngine,
    prompts: list[list[int]],
    params: SamplingParams,
    repeats: int,
    first: tuple[list[list[int]], list[SpecStats], float],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The trained draft's engine against the day-0 draft's on the same prompts, ``repeats`` times each.

    ``first`` is the trained arm's run already made; the random arm follows it, and later repeats
    alternate which arm goes first, so a machine that drifts during the run favours neither. The
    ratio pools every repeat's tokens and wall time; its interval resamples requests within each
    repeat (the same draw for both arms) over per-request decoding time, the prefill being the same
    target forward in both arms. The plans behind each arm's acceptance follow measured costs, so
    even a draft that is never used accepts differently from run to run (``mean_acceptance_length``
    per repeat shows by how much). Returns the random arm's report and the ratios (the result's own keys).
    """
    runs: dict[str, list[tuple[list[list[int]], list[SpecStats], float]]] = {"trained": [first], "random": []}
    for repeat in range(repeats):
        order = ("random", "trained") if repeat % 2 else ("trained", "random")
        for arm in order:
            if len(runs[arm]) <= repeat:
                runs[arm].append(run_engine(trained if arm == "trained" else random, prompts, params))

    def tok_s(arm: str) -> list[float]:
        return [sum(map(len, outputs)) / seconds for outputs, _, seconds in runs[arm]]

    def pooled(arm: str) -> float:
        return sum(sum(map(len, outputs)) for outputs, _, _ in runs[arm]) / sum(s for _, _, s in runs[arm])

    rows = {arm: [request_rows(outputs, stats) for outputs, stats, _ in runs[arm]] for arm in runs}
    trained_tok_s, random_tok_s = tok_s("trained"), tok_s("random")
    trained_pooled, random_pooled = pooled("trained"), pooled("random")
    random_arm = {
        "tok_s": random_pooled,
        "tok_s_per_repeat": random_tok_s,
        "trained_tok_s": trained_pooled,
        "trained_tok_s_per_repeat": trained_tok_s,
        "mean_acceptance_length": acceptance_length([s for _, stats, _ in runs["random"] for s in stats]),
        "mean_acceptance_length_per_repeat": [acceptance_length(stats) for _, stats, _ in runs["random"]],
        "trained_mean_acceptance_length_per_repeat": [
            acceptance_length(stats) for _, stats, _ in runs["trained"]
        ],
        "draft_share_of_accepted": draft_share([s for _, stats, _ in runs["random"] for s in stats]),
        "repeats": repeats,
        # lossless: every run of both arms emits what the trained arm's first run did
        "outputs_identical_across_runs": all(out == first[0] for arm in runs for out, _, _ in runs[arm]),
    }
    comparison = {
        "over_random_draft_tok_s": trained_pooled / random_pooled,
        "over_random_draft_tok_s_per_repeat": [
            a / b for a, b in zip(trained_tok_s, random_tok_s, strict=True)
        ],
        "over_random_draft_tok_s_ci95": paired_ratio_interval(rows["trained"], rows["random"]),
    }
    return random_arm, comparison


def sampled_arms(
    target: LlamaModel,
    config: EngineConfig,
    draft: Eagle3Draft,
    draft_name: str,
    prompts: list[list[int]],
    args: argparse.Namespace,
    eos: int,
) -> dict[str, Any]:
    """Seeded sampling at ``--temperature``: the controller's choice of rule (``auto``), the draft's
    draws verified with min(1, p/q) (``sampled``) and its top-k as point masses (``point_mass``); all
    lossless, so only acceptance and speed differ."""
    arms: dict[str, Any] = {"temperature": args.temperature}
    rules: tuple[DraftRule, ...] = ("auto", "sampled", "point_mass")
    for rule in rules:
        name = "" if rule == "auto" else f"{rule}_"
        spec = replace(config.spec, draft_rule=rule)
        engine = SpecEngine(target, replace(config, spec=spec), DraftRunner(draft, target.embed, draft_name))
        outputs, stats, seconds = run_engine(
            engine,
            prompts,
            SamplingParams(args.max_new_tokens, args.temperature, stop_token_ids=(eos,)),
            seeded=True,
        )
        arms[f"{name}mean_acceptance_length"] = acceptance_length(stats)
        arms[f"{name}tok_s"] = sum(map(len, outputs)) / seconds
        arms[f"{name}draft_share_of_accepted"] = draft_share(stats)
    return arms


def kernel_arms(
    target: LlamaModel,
    config: EngineConfig,
    draft: Eagle3Draft,
    draft_name: str,
    prompts: list[list[int]],
    params: SamplingParams,
) -> dict[str, Any]:
    """Target-only and speculative tokens/s of ``target`` (outputs kept for comparison)."""
    off = SpecEngine(target, replace(config, spec=SpecConfig(mode="off")))
    spec = SpecEngine(target, config, DraftRunner(draft, target.embed, version=draft_name))
    short = replace(params, max_new_tokens=8)
    for engine in (off, spec):
        run_engine(engine, prompts[:1], short)
    off_out, _, off_s = run_engine(off, prompts, params)
    spec_out, stats, spec_s = run_engine(spec, prompts, params)
    return {
        "target_only_tok_s": sum(map(len, off_out)) / off_s,
        "spec_tok_s": sum(map(len, spec_out)) / spec_s,
        "mean_acceptance_length": acceptance_length(stats),
        "outputs": (off_out, spec_out),
    }


def against_kernels(
    other: str,
    model_dir: Path,
    dtype: str,
    config: EngineConfig,
    draft: Eagle3Draft,
    draft_name: str,
    prompts: list[list[int]],
    params: SamplingParams,
    native_target: LlamaModel,
) -> dict[str, Any]:
    """The engine's arms with ``other`` bf16 products (``onednn``, or the kernel's ``vector`` ones
    instead of AMX tiles), between two passes of the configured native ones."""
    with native.switched(other == "vector", amx=False):
        other_target = LlamaModel.load_named(model_dir, dtype)
    first = kernel_arms(native_target, config, draft, draft_name, prompts, params)
    other_arms = kernel_arms(other_target, config, draft, draft_name, prompts, params)
    second = kernel_arms(native_target, config, draft, draft_name, prompts, params)
    native_outputs = first.pop("outputs")
    second.pop("outputs")
    other_outputs = other_arms.pop("outputs")
    keys = ("target_only_tok_s", "spec_tok_s", "mean_acceptance_length")
    native_arm = {key: (first[key] + second[key]) / 2 for key in keys}
    return {
        "native_passes": [first, second],
        "native": native_arm,
        other: other_arms,
        f"native_over_{other}_target_only": native_arm["target_only_tok_s"] / other_arms["target_only_tok_s"],
        f"native_over_{other}_spec": native_arm["spec_tok_s"] / other_arms["spec_tok_s"],
        # each kernel is lossless against its own target-only decoding; across kernels bf16 rounds apart
        f"{other}_spec_identical_to_its_target_only": other_outputs[1] == other_outputs[0],
        "native_spec_identical_to_its_target_only": native_outputs[1] == native_outputs[0],
        "greedy_tokens_identical_across_kernels_share": prefix_share(native_outputs[0], other_outputs[0]),
    }


def main(argv: list[str] | None = None) -> int:
    from transformers import AutoTokenizer, LlamaForCausalLM

    args = parse_args(argv)
    settings = get_settings()
    threads = args.threads or settings.threads
    torch.set_num_threads(threads)
    native.enable(settings.native_kernels, settings.native_amx)  # as a worker would
    if args.against_onednn and not native.supports(SERVING_DTYPES[args.dtype][0], 32):
        raise SystemExit("--against-onednn needs the native kernels: switched off, or not built for this CPU")
    if args.against_vector and not native.amx():
        raise SystemExit("--against-vector needs AMX tiles: switched off, or not on this CPU")
    model_dir = Path(args.model) if args.model else settings.resolved_model_path
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    test_prompts = build_prompts(args.workload, "test", args.requests)
    prompts = [encode_prompt(p, tokenizer) for p in test_prompts]
    train_ids = [encode_prompt(p, tokenizer) for p in build_prompts(args.workload, "train", 400)]
    eos = int(tokenizer.eos_token_id)
    params = SamplingParams(max_new_tokens=args.max_new_tokens, stop_token_ids=(eos,))
    target = LlamaModel.load_named(model_dir, args.dtype)
    kernels = native.kernels_name(target.dtype)
    hf = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    max_len = max(len(p) for p in prompts) + args.max_new_tokens + 8
    off = SpecEngine(target, EngineConfig(args.batch, max_len, spec=SpecConfig(mode="off")))
    draft, draft_name = make_draft(args.draft, target, train_ids)
    spec_config = EngineConfig(
        args.batch, max_len, spec=SpecConfig(mode=args.mode, use_ngram=not args.no_ngram)
    )
    spec = SpecEngine(target, spec_config, DraftRunner(draft, target.embed, version=draft_name))
    # Each engine first decodes a train-split prompt in full: its controller then holds measured costs
    # and acceptance, as a serving worker's does after its first request, and the runs below measure
    # steady state. A cold one cost the trained arm's first run 0.7 of acceptance
    # length in one run (2.44 against 3.09-3.23 in its later repeats).
    longest = max(len(p) for p in prompts)
    warm = [next((p for p in train_ids if len(p) <= longest), prompts[0])]
    hf_plain = hf_generator(hf, args.max_new_tokens, eos, None)
    hf_lookup = hf_generator(hf, args.max_new_tokens, eos, PROMPT_LOOKUP_TOKENS)
    for engine in (off, spec):
        run_engine(engine, warm, params)
    hf_plain(warm[0][:32])
    hf_lookup(warm[0][:32])

    hf_out, hf_s = run_hf(hf_plain, prompts)
    lookup_out, lookup_s = run_hf(hf_lookup, prompts)
    off_out, _, off_s = run_engine(off, prompts, params)
    spec_out, spec_stats, spec_s = run_engine(spec, prompts, params)

    def tok_s(outputs: list[list[int]], seconds: float) -> float:
        return sum(len(o) for o in outputs) / seconds

    random_arm: dict[str, Any] | None = None
    comparison: dict[str, Any] = {}
    if args.against_random:
        day0, _ = make_draft("random", target, train_ids)
        baseline = SpecEngine(target, spec_config, DraftRunner(day0, target.embed, version="random"))
        run_engine(baseline, warm, params)
        random_arm, comparison = against_random(
            spec, baseline, prompts, params, args.repeats, (spec_out, spec_stats, spec_s)
        )
        random_arm["outputs_identical_to_target_only"] = (
            random_arm.pop("outputs_identical_across_runs") and spec_out == off_out
        )

    accepted = sum(s.num_accepted_tokens for s in spec_stats)
    drafts = sum(s.num_drafts for s in spec_stats)
    from_draft = sum(s.accepted_from_draft for s in spec_stats)
    from_ngram = sum(s.accepted_from_ngram for s in spec_stats)
    depth = max((len(s.accepted_per_position) for s in spec_stats), default=0)
    per_position = [
        sum(s.accepted_per_position[k] for s in spec_stats if k < len(s.accepted_per_position))
        / max(drafts, 1)
        for k in range(depth)
    ]
    result = {
        "hf_greedy_tok_s": tok_s(hf_out, hf_s),
        "hf_prompt_lookup_tok_s": tok_s(lookup_out, lookup_s),
        "target_only_tok_s": tok_s(off_out, off_s),
        "spec_tok_s": tok_s(spec_out, spec_s),
        "speedup_vs_hf_greedy": hf_s / spec_s * sum(map(len, spec_out)) / max(sum(map(len, hf_out)), 1),
        "speedup_vs_target_only": off_s / spec_s * sum(map(len, spec_out)) / max(sum(map(len, off_out)), 1),
        # the engine's own estimate (what the dashboard shows), decoding only: check it against the above
        "estimated_speedup_vs_target_only": sum(s.target_only_seconds for s in spec_stats)
        / max(sum(s.decode_seconds for s in spec_stats), 1e-9),
        "mean_acceptance_length": acceptance_length(spec_stats),
        "per_position_acceptance": per_position,
        # who proposed the accepted tokens; a token both proposed counts for both
        "accepted_by_source": {"draft": from_draft, "ngram": from_ngram, "total": accepted},
        "draft_share_of_accepted": draft_share(spec_stats),
        # lossless: speculation reproduces target-only decoding of its own dtype; in float32 both
        # also reproduce HF greedy decoding
        "outputs_identical": spec_out == off_out
        and (args.dtype != "float32" or hf_out == lookup_out == off_out),
        "outputs_identical_per_arm": {
            "hf_prompt_lookup": lookup_out == hf_out,
            "target_only": off_out == hf_out,
            "spec": spec_out == hf_out,
        },
        "spec_identical_to_target_only": spec_out == off_out,
        "spec_tokens_identical_to_target_only_share": prefix_share(spec_out, off_out),
        "greedy_tokens_identical_to_fp32_share": prefix_share(off_out, hf_out),
        "dtype": args.dtype,
        "kernels": kernels,
        "model": str(model_dir),
        "threads": threads,
        "batch": args.batch,
        "hf_batch": 1,
        "workload": args.workload,
        "draft": args.draft,
        "mode": args.mode,
        "ngram": not args.no_ngram,
        "requests": len(prompts),
        "max_new_tokens": args.max_new_tokens,
        "generated_tokens": sum(map(len, spec_out)),
    }
    if args.temperature is not None:
        result["sampled"] = sampled_arms(target, spec_config, draft, draft_name, prompts, args, eos)
        greedy = result["mean_acceptance_length"]
        result["sampled"]["over_greedy_acceptance_length"] = (
            result["sampled"]["mean_acceptance_length"] / greedy
        )
    if random_arm is not None:
        result["random_draft"] = random_arm
        result.update(comparison)
        result["outputs_identical"] = (
            result["outputs_identical"] and random_arm["outputs_identical_to_target_only"]
        )
    other = "onednn" if args.against_onednn else "vector" if args.against_vector else None
    if other is not None:
        compared = against_kernels(
            other, model_dir, args.dtype, spec_config, draft, draft_name, prompts, params, target
        )
        result[f"against_{other}"] = compared
        result["outputs_identical"] = (
            result["outputs_identical"]
            and compared[f"{other}_spec_identical_to_its_target_only"]
            and compared["native_spec_identical_to_its_target_only"]
        )
    if args.through_api:
        if args.batch != 1 or args.mode != "tree":
            raise SystemExit("--through-api serves one request at a time in the worker's tree mode")
        env = {
            "BOREALIS_THREADS": str(threads),
            "BOREALIS_SPEC_NGRAM": str(not args.no_ngram).lower(),
            "BOREALIS_DTYPE": args.dtype,
        }

        def in_process() -> tuple[float, float]:
            outputs, stats, seconds = run_engine(spec, prompts, params)
            engine_seconds = sum(s.prefill_seconds + s.decode_seconds for s in stats) / len(stats)
            return tok_s(outputs, seconds), engine_seconds

        api = run_api_arm(
            test_prompts, draft, args.max_new_tokens, env, args.api_trainer, in_process, args.api_rounds
        )
        expected = [tokenizer.decode(out, skip_special_tokens=True) for out in spec_out]
        texts = api.pop("texts")
        api["outputs_identical_to_spec"] = texts == expected
        api["identical_share"] = sum(a == b for a, b in zip(texts, expected, strict=True)) / len(texts)
        result["through_api"] = api
    emit(result, Path(args.json_path) if args.json_path else None)
    return 0 if result["outputs_identical"] else 1
