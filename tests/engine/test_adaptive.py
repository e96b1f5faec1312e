"""The speculation controller's choices that do not need a model: the draft rule for sampled requests."""

from __future__ import annotations

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
