"""The speculation controller: the draft rule for sampled requests, costs of unmeasured widths, the
draft's shape per batch size, and what the engine charges it for drafting."""

from __future__ import annotations

import time

import pytest

from tests.engine.helpers import greedy_request, random_runner, run_all
from tests.engine.test_engine_greedy import MODES
from worker.engine.adaptive import Plan, SpeculationController
from worker.engine.engine import EngineConfig, SpecEngine
from worker.engine.llama import LlamaModel


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


def test_a_chain_where_tree_rows_cost_more_than_they_gain_the_tree_where_rows_are_cheap() -> None:
    """Costs shaped like this CPU's (batch 1: rows nearly free; batch 8: every row costs), acceptance
    like a chat draft's: the tree accepts more per depth than its top-1 chain."""
    controller = SpeculationController(3, 0, 3)
    for rows, ms in [(1, 20.0), (4, 21.0), (10, 23.0), (8, 40.0), (16, 55.0), (32, 85.0), (80, 175.0)]:
        controller.observe_target(rows, ms / 1000)
    for rows, ms in [(1, 1.0), (3, 1.2), (8, 2.0), (24, 4.0)]:
        controller.observe_draft(rows, ms / 1000)
    for _ in range(200):
        controller.observe_acceptance(True, 3, 2, width=3)  # the tree: two of three depths accepted
        controller.observe_acceptance(True, 3, 1, width=1)  # its chain: one
    small = controller.plan(1, 0, has_draft=True)
    assert small.draft_width == 3 and small.draft_depth >= 2
    assert controller.plan(8, 0, has_draft=True) == Plan(1, 0, 1)  # 16 rows: 2 tokens for 1.4x the cost
    for _ in range(200):
        controller.observe_acceptance(True, 3, 0, width=1)  # the chain's guesses stop being accepted
    probes = [controller.plan(8, 0, has_draft=True) for _ in range(64)]
    assert {p.draft_width for p in probes if p.draft_depth} == {1, 3}  # both shapes probed
    assert sum(p.draft_depth > 0 for p in probes) == 64 // controller.probe_every


def test_a_catch_up_over_a_new_prompt_is_not_charged_as_drafting(
    tiny_model: LlamaModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A one-off catch-up (a new prompt; likewise a new draft or steps taken without it) charged to the
    draft made probes after steps without the draft look dear, which can keep the draft off for a run.
    Here a one-off catch-up is made to cost a second; no drafting cost the controller sees may hold it."""
    engine = SpecEngine(
        tiny_model,
        EngineConfig(max_batch=1, max_seq_len=256, spec=MODES["draft_chain"]),
        random_runner(tiny_model, 48),
    )
    steady_flags: list[bool] = []
    catch_up = engine._draft_catch_up

    def slow_one_offs() -> bool:
        steady = catch_up()
        steady_flags.append(steady)
        if not steady:
            time.sleep(1.0)
        return steady

    charged: list[float] = []
    observe = engine.controller.observe_draft
    monkeypatch.setattr(engine, "_draft_catch_up", slow_one_offs)
    monkeypatch.setattr(
        engine.controller, "observe_draft", lambda rows, s: (charged.append(s), observe(rows, s))
    )
    run_all(engine, [greedy_request("r", list(range(3, 43)), 24)])
    assert steady_flags[0] is False and all(steady_flags[1:])  # the 40-token prompt, then steady steps
    assert len(charged) == len(steady_flags) and max(charged) < 0.1
