"""`borealis bench drift` on a tiny model: every window judged by both rules, tallies that add up."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.procs import cli_argv


def test_every_window_is_judged_by_both_rules(
    base_env: dict[str, str], tiny_model_dir: Path, tmp_path: Path
) -> None:
    env = {**base_env, "BOREALIS_MODEL_PATH": str(tiny_model_dir)}
    out = tmp_path / "drift.json"
    args = ["--phases", "chat,code", "--requests-per-phase", "72", "--max-new-tokens", "48", "--window", "24"]
    subprocess.run([*cli_argv("bench", "drift"), *args, "--json", str(out)], env=env, check=True, timeout=300)
    (judged,) = json.loads(out.read_text())["by_window_size"]
    rows = judged["windows"]
    assert rows and {row["phase"] for row in rows} <= {"chat", "code"}
    for rule, key in (("floor_rule", "shift"), ("fixed_rule", "fixed_rule_shift")):
        tally = judged[rule]
        assert tally["windows"] == len(rows) and tally["shifts"] == 1
        assert tally["false_alarms"] + tally["shifts_caught"] == sum(1 for row in rows if row[key])
    assert all(
        row["fixed_rule_shift"] == (row["divergence"] > json.loads(out.read_text())["js_threshold"])
        for row in rows
    )
