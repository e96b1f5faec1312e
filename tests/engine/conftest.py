"""Shared fixtures: a tiny random-weight Llama (fast) and the embedded SmolLM2 (where real text matters)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from borealis.settings import get_settings
from worker.engine.llama import LlamaModel

TINY_CONFIG: dict[str, Any] = {
    "vocab_size": 96,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 512,
    "rope_theta": 10000.0,
    "tie_word_embeddings": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 2,
}


@pytest.fixture(scope="session", autouse=True)
def _threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama saved as an HF directory, with peaked logits so greedy decoding is stable."""
    torch.manual_seed(0)
    hf = LlamaForCausalLM(LlamaConfig(**TINY_CONFIG)).eval()
    with torch.no_grad():
        hf.model.embed_tokens.weight.mul_(8.0)
    path = tmp_path_factory.mktemp("tiny-llama")
    hf.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_hf(tiny_dir: Path) -> LlamaForCausalLM:
    return LlamaForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def tiny_model(tiny_dir: Path) -> LlamaModel:
    return LlamaModel.load(tiny_dir)


@pytest.fixture(scope="session")
def smol_dir() -> Path:
    path = get_settings().resolved_model_path
    if not (path / "model.safetensors").is_file():
        pytest.skip(f"embedded model not prepared at {path}")
    return path


@pytest.fixture(scope="session")
def smol_hf(smol_dir: Path) -> LlamaForCausalLM:
    return LlamaForCausalLM.from_pretrained(smol_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def smol_model(smol_dir: Path) -> LlamaModel:
    return LlamaModel.load(smol_dir)
