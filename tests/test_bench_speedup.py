"""`borealis bench speedup` on a tiny model: every arm lossless, the random-draft arm beside the draft's,
the oneDNN arms beside the native kernel's."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from tests.procs import cli_argv
from worker.engine import native


def test_the_random_draft_arm_runs_beside_the_drafts_own(
    base_env: dict[str, str], tiny_model_dir: Path, tmp_path: Path
) -> None:
    env = {**base_env, "BOREALIS_MODEL_PATH": str(tiny_model_dir)}
    out = tmp_path / "speedup.json"
    args = ["--requests", "2", "--max-new-tokens", "12", "--against-random", "--repeats", "2", "--no-ngram"]
    subprocess.run(
        [*cli_argv("bench", "speedup"), *args, "--json", str(out)], env=env, check=True, timeout=300
    )
    result = json.loads(out.read_text())
    random = result["random_draft"]
    assert result["outputs_identical"] and random["outputs_identical_to_target_only"]
    assert random["repeats"] == 2 and random["trained_tok_s_per_repeat"][0] == result["spec_tok_s"]
    assert result["over_random_draft_tok_s"] == random["trained_tok_s"] / random["tok_s"]
    assert result["over_random_draft_tok_s_per_repeat"] == [
        a / b for a, b in zip(random["trained_tok_s_per_repeat"], random["tok_s_per_repeat"], strict=True)
    ]
    low, high = result["over_random_draft_tok_s_ci95"]
    assert 0 < low <= high
    assert min(random["mean_acceptance_length_per_repeat"]) >= 1.0
    assert result["ngram"] is False and result["accepted_by_source"]["ngram"] == 0  # draft-only serving


def test_the_temperature_arms_compare_the_two_sampling_rules(
    base_env: dict[str, str], tiny_model_dir: Path, tmp_path: Path
) -> None:
    env = {**base_env, "BOREALIS_MODEL_PATH": str(tiny_model_dir)}
    out = tmp_path / "speedup.json"
    args = ["--requests", "2", "--max-new-tokens", "12", "--temperature", "0.7", "--json", str(out)]
    subprocess.run([*cli_argv("bench", "speedup"), *args], env=env, check=True, timeout=300)
    sampled = json.loads(out.read_text())["sampled"]
    assert sampled["temperature"] == 0.7
    for rule in ("", "sampled_", "point_mass_"):
        assert sampled[f"{rule}mean_acceptance_length"] >= 1.0 and sampled[f"{rule}tok_s"] > 0
    assert sampled["over_greedy_acceptance_length"] > 0


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(
            "onednn",
            marks=pytest.mark.skipif(
                not native.serves(torch.bfloat16), reason="needs the native kernels here"
            ),
        ),
        pytest.param(
            "vector", marks=pytest.mark.skipif(not native.amx(), reason="needs AMX tiles on this CPU")
        ),
    ],
)
def test_the_other_kernels_arms_run_between_two_passes_of_the_configured_ones(
    other: str, base_env: dict[str, str], tiny_model_dir: Path, tmp_path: Path
) -> None:
    env = {**base_env, "BOREALIS_MODEL_PATH": str(tiny_model_dir)}
    out = tmp_path / "speedup.json"
    args = ["--requests", "2", "--max-new-tokens", "12", "--dtype", "bfloat16", f"--against-{other}"]
    subprocess.run(
        [*cli_argv("bench", "speedup"), *args, "--json", str(out)], env=env, check=True, timeout=300
    )
    result = json.loads(out.read_text())
    compared = result[f"against_{other}"]
    assert result["outputs_identical"] and compared[f"{other}_spec_identical_to_its_target_only"]
    assert len(compared["native_passes"]) == 2 and compared[other]["target_only_tok_s"] > 0
    native_mean = sum(p["spec_tok_s"] for p in compared["native_passes"]) / 2
    assert compared[f"native_over_{other}_spec"] == native_mean / compared[other]["spec_tok_s"]
    assert result["kernels"] == native.kernels_name(torch.bfloat16)


def test_the_kernel_comparison_is_refused_where_it_cannot_compare(base_env: dict[str, str]) -> None:
    """Switched off by the operator's settings (which the benchmark follows, as a worker does), or fp32
    for the AMX comparison (bf16 only)."""
    off = {**base_env, "BOREALIS_NATIVE_KERNELS": "false"}
    no_amx = {**base_env, "BOREALIS_NATIVE_AMX": "false"}
    for env, dtype, reason, flag in (
        (off, "bfloat16", "needs the native kernels", "--against-onednn"),
        (off, "float32", "needs the native kernels", "--against-onednn"),
        (no_amx, "bfloat16", "needs AMX tiles", "--against-vector"),
        (base_env, "float32", "use --dtype", "--against-vector"),
    ):
        argv = [*cli_argv("bench", "speedup"), "--dtype", dtype, flag]
        run = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode != 0 and reason in run.stderr


@pytest.mark.slow
def test_the_api_arm_serves_the_same_text_and_says_where_a_requests_time_went(
    base_env: dict[str, str], tiny_model_dir: Path, tmp_path: Path
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**base_env, "BOREALIS_MODEL_PATH": str(tiny_model_dir), "TMPDIR": str(scratch)}
    out = tmp_path / "speedup.json"
    args = ["--requests", "2", "--max-new-tokens", "12", "--through-api", "--api-rounds", "1"]
    subprocess.run(
        [*cli_argv("bench", "speedup"), *args, "--json", str(out)], env=env, check=True, timeout=300
    )
    api = json.loads(out.read_text())["through_api"]
    assert api["outputs_identical_to_spec"] and api["rounds"] == 1
    assert api["over_in_process_spec"] == api["tok_s"] / api["in_process_spec_tok_s_per_round"][0]
    # the worker's prefill and decoding, and the rest of each request's wall time at the client
    assert api["worker_seconds_per_request"] > 0 and api["outside_worker_seconds_per_request"] > 0
    assert api["in_process_engine_seconds_per_request_per_round"][0] > 0
    assert not list(scratch.glob("borealis-bench-*"))  # the private appliance's home went with it
