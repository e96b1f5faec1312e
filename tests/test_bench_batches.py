"""`borealis bench batches` on a tiny model: every batch size measured, speculation lossless at each."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.procs import cli_argv
from worker.bench.batches import parse_args


def test_every_workload_and_batch_size_gets_a_lossless_cell(
    base_env: dict[str, str], tiny_model_dir: Path, tmp_path: Path
) -> None:
    env = {**base_env, "BOREALIS_MODEL_PATH": str(tiny_model_dir)}
    out = tmp_path / "batches.json"
    args = ["--workloads", "code,chat", "--batches", "1,3", "--requests", "3", "--max-new-tokens", "10"]
    args += ["--repeats", "3", "--waves", "2", "--json", str(out)]
    subprocess.run([*cli_argv("bench", "batches"), *args], env=env, check=True, timeout=300)
    result = json.loads(out.read_text())
    assert result["outputs_identical"] is True
    assert set(result["cells"]) == {"code", "chat"}
    assert all(set(rows) == {"1", "3"} for rows in result["cells"].values())
    # at least two full batches each: 3 prompts at batch 1, 6 at batch 3
    assert all(rows["1"]["requests"] == 3 and rows["3"]["requests"] == 6 for rows in result["cells"].values())
    ratios = [cell["spec_over_target_only"] for rows in result["cells"].values() for cell in rows.values()]
    assert result["min_spec_over_target_only"] == min(ratios) > 0
    for batch, cell in (
        (int(size), cell) for rows in result["cells"].values() for size, cell in rows.items()
    ):
        low, high = cell["spec_over_target_only_range"]
        assert cell["repeats"] == 3 and low <= cell["spec_over_target_only"] <= high  # the median repeat
        decode = cell["decode_spec_over_target_only_runs"]
        assert len(decode) == 3 and cell["decode_spec_over_target_only"] == sorted(decode)[1] > 0
        assert cell["target_only_step_ms"] > 0 and cell["spec_plans"]
        seconds = [plan["seconds"] for plan in cell["spec_plans"]]
        assert seconds == sorted(seconds, reverse=True)
        for plan in cell["spec_plans"]:  # a full-batch step emits at least one token per sequence
            assert plan["steps"] >= 1 and plan["verify_ms"] > 0 and plan["predicted_verify_ms"] > 0
            assert plan["tokens_per_step"] >= batch and plan["mean_rows"] >= batch
    decode_ratios = [
        cell["decode_spec_over_target_only"] for rows in result["cells"].values() for cell in rows.values()
    ]
    assert result["min_decode_spec_over_target_only"] == min(decode_ratios)


def test_a_run_without_a_decoding_step_is_refused() -> None:
    """One new token comes from prefill alone: no decoding step, so no decode-only ratio to report."""
    assert parse_args(["--max-new-tokens", "2"]).max_new_tokens == 2
    for bad in (["--max-new-tokens", "1"], ["--max-new-tokens", "0"], ["--repeats", "0"], ["--waves", "0"]):
        with pytest.raises(SystemExit):
            parse_args(bad)
