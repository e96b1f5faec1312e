"""`borealis bench step` on a tiny model: bytes counted from the weights, floor and ratio consistent."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.procs import cli_argv
from worker.engine import native


def test_a_step_is_compared_with_its_weight_bytes_over_the_bandwidth(
    base_env: dict[str, str], tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "step.json"
    args = ["--model", str(tiny_model_dir), "--rounds", "2", "--steps", "4", "--buffer-mb", "64"]
    subprocess.run(
        [*cli_argv("bench", "step"), *args, "--json", str(out)], env=base_env, check=True, timeout=300
    )
    result = json.loads(out.read_text())
    low_precision = native.serves_low_precision()
    assert set(result["dtypes"]) == ({"float32", "bfloat16", "int4"} if low_precision else {"float32"})
    assert result["skipped"] == ([] if low_precision else ["bfloat16", "int4"])
    state = load_file(str(tiny_model_dir / "model.safetensors"))
    layer_params = sum(t.numel() for name, t in state.items() if name.startswith("model.layers."))
    fp32 = result["dtypes"]["float32"]
    # the engine's kernels where built (a tiny model's widths qualify), else oneDNN
    assert fp32["kernels"] == ("native" if native.supports(torch.float32, 32) else "onednn")
    head_params = state["model.embed_tokens.weight"].numel() + state["model.norm.weight"].numel()
    # every projection and norm once (oneDNN's packed layout may pad a little)
    assert 4 * layer_params <= fp32["layer_bytes"] <= 1.05 * 4 * layer_params
    assert 4 * head_params <= fp32["head_bytes"] <= 1.05 * 4 * head_params
    assert result["bandwidth_gb_s"] > 0
    for arm in result["dtypes"].values():
        floor = (arm["layer_bytes"] + arm["head_bytes"]) / (result["bandwidth_gb_s"] * 1e9) * 1000
        assert abs(arm["floor_ms"] - floor) <= 0.01 * floor + 0.01
        low, high = arm["step_ms_range"]
        assert 0 < low <= arm["step_ms"] <= high
        assert arm["step_over_floor"] > 0
    if low_precision:  # the engine's kernel reads bf16 weights as stored; int4 a quarter of that and scales
        bf16, int4 = result["dtypes"]["bfloat16"], result["dtypes"]["int4"]
        assert bf16["layer_bytes"] == 2 * layer_params and bf16["head_bytes"] == 2 * head_params
        assert int4["layer_bytes"] < bf16["layer_bytes"] / 2
