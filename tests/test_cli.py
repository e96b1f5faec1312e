"""The `borealis` command line: subcommands that own their flags get them, others refuse strays."""

from __future__ import annotations

import os
import subprocess

from tests.procs import cli_argv


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli_argv(*args), capture_output=True, text=True, timeout=120)


def test_benchmarks_and_training_receive_their_own_flags() -> None:
    for args, flag in (
        (("bench", "swap", "--help"), "--swaps"),
        (("bench", "load", "--help"), "--clients"),
        (("bench", "speedup", "--help"), "--workload"),
        (("bench", "ablation", "--help"), "--rejected-weight"),
        (("bench", "shift", "--help"), "--requests-per-phase"),
        (("draft", "train", "--help"), "--minutes"),
    ):
        result = run(*args)
        assert result.returncode == 0, result.stderr
        assert flag in result.stdout


def test_unknown_flags_are_refused_elsewhere() -> None:
    result = run("db", "upgrade", "--bogus")
    assert result.returncode == 2
    assert "unrecognized arguments: --bogus" in result.stderr


def test_version_and_a_misspelt_setting_is_named() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOREALIS_")}
    result = subprocess.run(
        cli_argv("--version"),
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "BOREALIS_MODLE_PATH": "/models/x", "BOREALIS_MODEL_NAME": "m"},
    )
    assert result.returncode == 0 and result.stdout.startswith("borealis ")
    assert "BOREALIS_MODLE_PATH is not a Borealis setting" in result.stderr
    assert "did you mean BOREALIS_MODEL_PATH?" in result.stderr
    assert "BOREALIS_MODEL_NAME" not in result.stderr  # a real setting draws no warning
