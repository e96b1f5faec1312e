"""What the SGLang tests share: the prompts, and the CPU engine's greedy output they must match."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from tests.sglang.requests import MAX_NEW, PROMPTS
from worker.draft.generate import greedy_outputs
from worker.engine.llama import LlamaModel


@pytest.fixture(scope="session")
def tokenizer(smollm2_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.fixture(scope="session")
def prompt_ids(tokenizer: Any) -> list[list[int]]:
    return [tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]


@pytest.fixture(scope="session")
def cpu_engine_outputs(smollm2_dir: Path, prompt_ids: list[list[int]], tokenizer: Any) -> list[list[int]]:
    """The CPU engine's target-only greedy continuations (fp32), the reference."""
    target = LlamaModel.load(smollm2_dir)
    return greedy_outputs(target, prompt_ids, MAX_NEW, stop_token_ids=(tokenizer.eos_token_id,))
