"""The speculation controller alone: the draft rule for sampled requests, costs of unmeasured widths."""

from __future__ import annotations

import pytest

from worker.engine.adaptive import SpeculationController


def test_the_rule_that_accepted_more_lately_is_chosen_and_the_other_probed() -> None:
    controller = SpeculationController(4, 4, 3, probe_every=4)
    for _ in range(40):  # verifying the draft's draws accepted little, its top-k a lot
        controller.observe_draft_rule(True, 0)
        controller.observe_draft_rule(False, 2)
    choices = [controller.draft_rule_draws() for _ in range(8)]
    assert choices == [False, False, False, True, False, False, False, True]
    for _ in range(60):  # the draft got better calibrated: its draws now accept more
        controller.observe_draft_rule(True, 3)
    assert [controller.draft_rule_draws() for _ in range(3)] == [True, True, True]


def test_unmeasured_widths_are_costed_from_the_measured_ones_around_them() -> None:
    controller = SpeculationController(4, 4, 3)
    assert controller.target_ms(8) > controller.target_ms(1)  # nothing measured: the default slope
    controller.observe_target(8, 0.075)
    controller.observe_target(64, 0.231)  # measured at batch 8 here: 3.1x the cost of 8 rows
    assert controller.target_ms(32) == pytest.approx(75 + (231 - 75) * 24 / 56)
    assert controller.target_ms(96) == pytest.approx(231 + (231 - 75) / 56 * 32)  # the measured slope
    assert controller.target_ms(4) < controller.target_ms(8)
