"""The embedded model is prepared offline, idempotently, with a verifiable manifest."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from borealis.files import sha256_file
from worker.model_prep import embedded_gguf_path, prepare_embedded_model, read_manifest


def test_manifest_records_source_and_weights(smollm2_dir: Path) -> None:
    manifest = read_manifest(smollm2_dir)
    assert manifest is not None
    assert manifest["source_sha256"] == sha256_file(embedded_gguf_path())
    assert manifest["weights_sha256"] == sha256_file(smollm2_dir / "model.safetensors")


def test_prepare_is_idempotent(smollm2_dir: Path) -> None:
    weights = smollm2_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert prepare_embedded_model(smollm2_dir) == smollm2_dir
    assert weights.stat().st_mtime_ns == before


def test_prepared_model_answers_sensibly(smollm2_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    out = model.generate(ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1] :])


@pytest.mark.slow
def test_fresh_machine_prepares_the_same_weights(smollm2_dir: Path, tmp_path: Path) -> None:
    """The path a new user's `make run` takes: no cached model dir, conversion from the GGUF alone."""
    fresh = prepare_embedded_model(tmp_path / "smollm2")
    manifest, cached = read_manifest(fresh), read_manifest(smollm2_dir)
    assert manifest is not None and cached is not None
    assert manifest["weights_sha256"] == cached["weights_sha256"]
    assert (fresh / "tokenizer.json").read_bytes() == (smollm2_dir / "tokenizer.json").read_bytes()
