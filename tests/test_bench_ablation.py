"""`borealis bench ablation` arms: named recipes over the trainer's knobs, refused when misspelt."""

from __future__ import annotations

import pytest

from worker.bench.ablation import parse_arm
from worker.draft.trainer import TrainConfig


def test_an_arm_overrides_only_the_knobs_it_names() -> None:
    base = TrainConfig(lr=1e-3, batch_tokens=2048)
    arm = parse_arm("slow:lr=1e-4,warmup_steps=50,init=target", base)
    assert arm.name == "slow" and arm.init_from_target
    assert (arm.config.lr, arm.config.warmup_steps, arm.config.batch_tokens) == (1e-4, 50, 2048)
    plain = parse_arm("base", base)
    assert plain.config == base and not plain.init_from_target


@pytest.mark.parametrize("text", ["", ":lr=1", "x:learning_rate=1", "x:init=teacher", "x:ttt_steps=two"])
def test_misspelt_arms_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_arm(text, TrainConfig())
