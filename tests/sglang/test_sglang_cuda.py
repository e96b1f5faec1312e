"""The GPU shape in one command (``make test-gpu`` on a CUDA machine with ``borealis[sglang]``).

SGLang's EAGLE-3 speculation with Borealis drafts, through the worker's own draft path
(``SGLangDrafts``: export, restart on a new vocabulary, in-place swap on the same one): speculative
greedy output equal to target-only, acceptance read from SGLang's ``meta_info``, and draft swaps in
the middle of traffic with no failed request. Skipped without CUDA; it has not run on the team's
CPU-only machines (see README).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoTokenizer

from borealis.settings import Settings
from tests.sglang.requests import Traffic, call_between_steps, generate, serving_sglang, tokens
from worker.draft.io import save_draft
from worker.draft.model import new_draft
from worker.draft.vocab import DraftVocab
from worker.engine.llama import LlamaModel
from worker.inference.engine_factory import ServingEngine
from worker.inference.runner import EngineRunner

pytest.importorskip("sglang")
if not torch.cuda.is_available():
    pytest.skip("SGLang's speculative decoding needs CUDA", allow_module_level=True)

pytestmark = [pytest.mark.slow, pytest.mark.gpu]
PROMPTS = ["def fibonacci(n):", "The capital of France is", "import numpy as np\n\ndef"]
MAX_NEW = 48


@pytest.fixture(scope="module")
def model_dir(smollm2_dir: Path) -> Path:
    return Path(os.environ.get("BOREALIS_GPU_TEST_MODEL", smollm2_dir))


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def prompt_ids(tokenizer: Any) -> list[list[int]]:
    return [tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]


def draft_artifact(model_dir: Path, out: Path, version: str, vocab_from: range, seed: int) -> Path:
    """A registered-looking day-0 draft: its vocabulary (the map SGLang keeps) comes from ``vocab_from``."""
    target = LlamaModel.load(model_dir)
    vocab = DraftVocab.from_counts(Counter(vocab_from), 4096, target.spec.vocab_size)
    save_draft(new_draft(target.spec, vocab, seed=seed), out / version, version=version)
    return out / version


@pytest.fixture(scope="module")
def serving(
    model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[EngineRunner, ServingEngine[Any]]]:
    home = tmp_path_factory.mktemp("sglang-gpu-home")
    settings = Settings(engine="sglang", sglang_device="cuda", home=home, max_batch=8)
    with serving_sglang(settings, model_dir) as served:
        yield served


def test_eagle3_with_borealis_drafts_is_lossless_reports_acceptance_and_swaps_under_traffic(
    serving: tuple[EngineRunner, Any],
    model_dir: Path,
    prompt_ids: list[list[int]],
    tokenizer: Any,
    tmp_path: Path,
) -> None:
    runner, built = serving
    assert built.kind == "sglang" and built.load_draft is not None and built.install_draft is not None
    eos = tokenizer.eos_token_id

    def outputs(tag: str) -> list[list[int]]:
        return [tokens(generate(runner, f"{tag}-{i}", p, eos, MAX_NEW)) for i, p in enumerate(prompt_ids)]

    target_only = outputs("plain")
    first = built.load_draft(draft_artifact(model_dir, tmp_path, "v0001", range(4096), seed=1))
    same_map = built.load_draft(draft_artifact(model_dir, tmp_path, "v0002", range(4096), seed=2))
    new_map = built.load_draft(draft_artifact(model_dir, tmp_path, "v0003", range(2048, 6144), seed=3))
    with Traffic(runner, prompt_ids, eos, MAX_NEW) as traffic:
        call_between_steps(runner, lambda: built.install_draft(first))  # target-only -> EAGLE-3: restart
        speculative = [generate(runner, f"spec-{i}", p, eos, MAX_NEW) for i, p in enumerate(prompt_ids)]
        call_between_steps(runner, lambda: built.install_draft(same_map))  # in place
        after_swap = outputs("swap")
        call_between_steps(runner, lambda: built.install_draft(new_map))  # new vocabulary map: restart
        after_restart = outputs("map")
    assert [tokens(events) for events in speculative] == target_only
    assert after_swap == target_only and after_restart == target_only
    for events in speculative:
        stats = events[-1].stats
        assert stats is not None and stats.num_steps > 0  # verify steps, from meta_info
        assert stats.num_draft_tokens > 0 and stats.accepted_from_draft == stats.num_accepted_tokens
    assert len(traffic.finished) >= 3 and set(traffic.finished) <= {"length", "stop"}
