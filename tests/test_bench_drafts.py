"""`borealis bench drafts`: saved drafts scored on the same held-out outputs, paired against the first."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.drafts import make_draft_artifact
from tests.procs import cli_argv
from worker.bench.drafts import parse_args


def test_drafts_are_scored_on_the_same_outputs(
    base_env: dict[str, str], tiny_model_dir: Path, tmp_path: Path
) -> None:
    first = make_draft_artifact(tiny_model_dir, tmp_path / "first", seed=0)
    same = make_draft_artifact(tiny_model_dir, tmp_path / "same", seed=0)
    other = make_draft_artifact(tiny_model_dir, tmp_path / "other", seed=1)
    out = str(tmp_path / "drafts.json")
    env = {**base_env, "BOREALIS_MODEL_PATH": str(tiny_model_dir)}
    args = [str(first), str(same), str(other), "--requests", "3", "--max-new-tokens", "12", "--json", out]
    subprocess.run([*cli_argv("bench", "drafts"), *args], env=env, check=True, timeout=300)
    result = json.loads(Path(out).read_text())
    assert result["first"] == str(first) and result["prompts"] == 3
    drafts = result["drafts"]
    assert "paired_vs_first" not in drafts[str(first)]
    # the same weights in another directory: the same acceptance on every prompt, so a zero difference
    assert drafts[str(same)]["simulated_acceptance"] == drafts[str(first)]["simulated_acceptance"]
    zero = {"mean_diff": 0.0, "diff_low": 0.0, "diff_high": 0.0}
    assert drafts[str(same)]["paired_vs_first"]["all"] == zero
    paired = drafts[str(other)]["paired_vs_first"]["code"]
    assert paired["diff_low"] <= paired["mean_diff"] <= paired["diff_high"]
    assert all(d["simulated_acceptance"]["all"] >= 1.0 for d in drafts.values())


def test_one_draft_has_nothing_to_be_compared_with(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        parse_args([str(tmp_path / "a"), str(tmp_path / "a")])
