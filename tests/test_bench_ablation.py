"""`borealis bench ablation` arms: named recipes over the trainer's knobs, refused when misspelt."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from worker.bench.ablation import paired_report, parse_arm
from worker.draft.trainer import TrainConfig


def test_an_arm_overrides_only_the_knobs_it_names() -> None:
    base = TrainConfig(lr=1e-3, batch_tokens=2048)
    arm = parse_arm("slow:lr=1e-4,warmup_steps=50,init=target", base)
    assert arm.name == "slow" and arm.init_from_target
    assert (arm.config.lr, arm.config.warmup_steps, arm.config.batch_tokens) == (1e-4, 50, 2048)
    plain = parse_arm("base", base)
    assert plain.config == base and not plain.init_from_target
    assert not parse_arm("outputs:prompt_rows=false", base).config.prompt_rows and base.prompt_rows
    assert not parse_arm("covered:uncovered_rows=false", base).config.uncovered_rows and base.uncovered_rows


def test_an_arm_may_replay_a_share_of_its_steps() -> None:
    arm = parse_arm("replay25:replay=0.25,lr=3e-3", TrainConfig())
    assert arm.replay == 0.25 and arm.config.lr == 3e-3
    assert parse_arm("base", TrainConfig()).replay == 0.0


def test_an_arm_may_train_on_fewer_of_the_served_traces() -> None:
    assert parse_arm("half:traces=24", TrainConfig()).traces == 24
    assert parse_arm("base", TrainConfig()).traces is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        ":lr=1",
        "x:learning_rate=1",
        "x:init=teacher",
        "x:ttt_steps=two",
        "x:replay=1.5",
        "x:traces=0",
        "x:traces=half",
    ],
)
def test_misspelt_arms_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_arm(text, TrainConfig())


def test_arms_are_compared_per_domain_on_the_same_traces() -> None:
    held_out = [SimpleNamespace(domain=d) for d in ("code", "code", "code", "chat", "chat", "chat")]
    # (tokens emitted, verification steps): acceptance 1.0 1.2 1.4 2.0 2.2 2.4 per trace
    first = [(10, 10), (12, 10), (14, 10), (20, 10), (22, 10), (24, 10)]
    arm = [(15, 10), (17, 10), (19, 10), (20, 10), (22, 10), (24, 10)]  # code +0.5 on every trace
    report = paired_report(held_out, arm, first)  # type: ignore[arg-type]
    assert report["code"] == {"mean_diff": 0.5, "diff_low": 0.5, "diff_high": 0.5}
    assert report["chat"] == {"mean_diff": 0.0, "diff_low": 0.0, "diff_high": 0.0}
    assert report["all"]["mean_diff"] == 0.25 and report["all"]["diff_low"] > 0
