"""`borealis bench trainer` on a tiny model: both arms train on the same rounds, each from its own source."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.procs import cli_argv


def test_the_features_arm_builds_every_example_from_the_side_store(
    base_env: dict[str, str], tiny_model_dir: Path, tmp_path: Path
) -> None:
    env = {**base_env, "BOREALIS_MODEL_PATH": str(tiny_model_dir), "BOREALIS_DRAFT_VOCAB_SIZE": "512"}
    out = tmp_path / "trainer.json"
    args = ["--requests", "4", "--new-per-round", "2", "--steps-per-round", "2", "--max-new-tokens", "8"]
    subprocess.run(
        [*cli_argv("bench", "trainer"), *args, "--json", str(out)], env=env, check=True, timeout=300
    )
    result = json.loads(out.read_text())
    traces = result["traces"]
    assert traces == 4 and result["feature_blobs_stored"] == 4 and result["rounds"] == 2
    prefill, features = result["arms"]["prefill"], result["arms"]["features"]
    assert (prefill["examples_by_prefill"], prefill["examples_from_features"]) == (traces, 0)
    assert (features["examples_by_prefill"], features["examples_from_features"]) == (0, traces)
    assert prefill["steps"] == features["steps"] == 4
    assert result["example_agreement"]["argmax_identical_share"] > 0.95
