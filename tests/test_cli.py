"""The `borealis` command line: subcommands that own their flags get them, others refuse strays."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

from tests.procs import cli_argv


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli_argv(*args), capture_output=True, text=True, timeout=120)


def test_benchmarks_and_training_receive_their_own_flags() -> None:
    for args, flag in (
        (("bench", "swap", "--help"), "--swaps"),
        (("bench", "load", "--help"), "--clients"),
        (("bench", "speedup", "--help"), "--workload"),
        (("bench", "ablation", "--help"), "--eval-at"),
        (("bench", "trainer", "--help"), "--new-per-round"),
        (("bench", "shift", "--help"), "--requests-per-phase"),
        (("bench", "drift", "--help"), "--window"),
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


def test_config_show_reads_env_file_and_secrets_dir_and_masks_secrets(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOREALIS_")}
    (tmp_path / ".env").write_text("BOREALIS_MODEL_NAME=from-dotenv\nUNRELATED=1\n")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "borealis_admin_token").write_text("adm_from_file\n")
    env.update(
        {
            "BOREALIS_SECRETS_DIR": str(secrets),
            "BOREALIS_CLUSTER_TOKEN": "cls_super_secret",
            "BOREALIS_REDIS_URL": "redis://:hunter2@cache.internal:6380/1",
            "BOREALIS_HOME": str(tmp_path / "home"),
        }
    )
    result = subprocess.run(
        cli_argv("config", "show"), capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["model_name"] == "from-dotenv"
    assert shown["cluster_token"] == shown["admin_token"] == "***"  # the file's token was read
    assert shown["redis_url"] == "redis://:***@cache.internal:6380/1"
    for secret in ("cls_super_secret", "adm_from_file", "hunter2"):
        assert secret not in result.stdout
    assert "BOREALIS_SECRETS_DIR" not in result.stderr  # a known variable, not a typo


def test_help_is_written_for_users() -> None:
    """Every command says what it is for; the top level shows where to start; bench names each benchmark."""
    from appliance.cli import build_parser

    parser = build_parser()
    top = parser.format_help()
    assert "start here:" in top and "borealis up --model DIR" in top and "BOREALIS_SECRETS_DIR" in top
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help for choice in commands._choices_actions}
    assert set(helps) == set(commands.choices)
    assert all(text and len(text) > 15 for text in helps.values()), helps
    bench = commands.choices["bench"].format_help()
    for name in ("speedup", "swap", "load", "ablation", "shift", "trainer", "drift"):
        assert f"\n{name} " in bench, name
