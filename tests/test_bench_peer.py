"""`borealis bench peer`: llama.cpp's real server and a private Borealis appliance on the same prompts.

llama.cpp is built from its PyPI sdist by the benchmark itself (about 8 minutes on 2 cores), once
per machine; this test reuses that build and is skipped where no run has made it yet.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from borealis.settings import default_home
from tests.procs import cli_argv
from worker.bench.appliance import make_day0_drafts
from worker.bench.llama_cpp import source_root

BUILD_CACHE = default_home() / "peer"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (source_root(BUILD_CACHE) / "build" / "bin" / "llama-server").is_file(),
        reason="llama.cpp not built here yet: run `borealis bench peer` once",
    ),
]


def test_both_servers_answer_the_same_prompts_through_their_openai_apis(
    base_env: dict[str, str], smollm2_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "peer.json"
    draft = make_day0_drafts(smollm2_dir, tmp_path)[0]  # llama.cpp runs it as EAGLE-3 after conversion
    args = [
        "--workloads",
        "humaneval,chat",
        "--requests",
        "1",
        "--max-new-tokens",
        "12",
        "--draft",
        str(draft),
    ]
    args += ["--llama-modes", "plain,ngram-simple", "--build-cache", str(BUILD_CACHE), "--json", str(out)]
    # llama.cpp's AMX kernel for this Q4_1 file stops on an illegal instruction on some Xeons (seen on
    # an Emerald Rapids, 2026-12-05); without repacking it keeps its vector kernels
    args += ["--llama-args=--no-repack"]
    env = {**base_env, "BOREALIS_MODEL_PATH": str(smollm2_dir)}
    subprocess.run([*cli_argv("bench", "peer"), *args], env=env, check=True, timeout=600)
    result = json.loads(out.read_text())
    assert set(result["llama_cpp"]) == {"plain", "ngram-simple", "draft-eagle3"}
    assert set(result["borealis"]) == {"target-only", "speculative"}
    assert all(tok_s > 0 for side in ("llama_cpp", "borealis") for tok_s in result[side].values())
    best = max(result["borealis"].values()) / max(result["llama_cpp"].values())
    assert result["best_over_llama_cpp_best"] == pytest.approx(best)
    assert result["prompts"] == {"humaneval": 1, "chat": 1}
    assert result["llama_cpp_extra_args"] == ["--no-repack"]
    # Borealis's speculation is lossless: its completions are its target-only ones
    assert result["same_text_as_borealis_target_only"]["borealis:speculative"] == 1.0
