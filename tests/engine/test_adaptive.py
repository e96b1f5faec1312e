"""The speculation controller: the draft rule for sampled requests, costs of unmeasured widths, and
what the engine charges it for drafting and tells it about acceptance."""

from __future__ import annotations

import time

import pytest

from tests.engine.helpers import greedy_request, random_runner, run_all
from tests.engine.test_engine_greedy import MODES
from worker.engine.adaptive import Plan, SpeculationController
from worker.engine.engine import EngineConfig, SpecEngine
from worker.engine.llama import LlamaModel
from worker.engine.proposals import Proposals
from worker.engine.tree import ProposalTree
from worker.engine.verify import Verdict


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


def test_a_switched_off_draft_is_probed_less_often_where_probes_cost_more() -> None:
    cheap, dear = SpeculationController(4, 4, 3), SpeculationController(4, 4, 3)
    for controller, wide_ms in ((cheap, 0.0105), (dear, 0.040)):
        controller.observe_target(1, 0.010)
        controller.observe_target(4, wide_ms)
        controller.observe_draft(3, 0.0001)
        for _ in range(200):  # the draft never accepts: it is off
            controller.observe_acceptance(True, 4, 0)
    for controller in (cheap, dear):
        plans = [controller.plan(1, 0, has_draft=True) for _ in range(400)]
        probes = [i for i, plan in enumerate(plans) if plan.draft_depth]
        interval = controller.probe_interval(1, plans[probes[0]])
        assert probes == [k * interval - 1 for k in range(1, len(probes) + 1)] and probes
    assert cheap.probe_interval(1, Plan(1, 0)) == 16  # the floor: probes here cost little
    assert dear.probe_interval(1, Plan(1, 0)) == 151  # (40 + 0.1 - 10) ms extra / (2 % of 10 ms)
    cheap.observe_catch_up(1, 0.050)  # bringing the draft's caches up to date before a probe: 50 ms
    assert cheap.probe_interval(1, Plan(1, 0)) == 253  # (10.5 + 0.1 + 50 - 10) ms / (2 % of 10 ms)
    assert cheap.probe_interval(2, Plan(1, 0)) > 253  # a wider batch has more rows to catch up
    dear.plan(1, 0, has_draft=True)
    dear.draft_changed()  # a new draft is probed at once, whatever the interval
    assert dear.plan(1, 0, has_draft=True).draft_depth == 1
    assert dear.plan(1, 0, has_draft=True).draft_depth == 0


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


def test_an_ngram_lookup_that_found_less_than_planned_counts_as_rejected(tiny_model: LlamaModel) -> None:
    """A batch pays for the planned n-gram width whether or not a sequence's lookup found a chain;
    rating the lookup on found chains only made it look worth its rows on chat, where most find none."""
    engine = SpecEngine(tiny_model, EngineConfig(max_batch=1, max_seq_len=64, spec=MODES["ngram_chain"]))
    rates = engine.controller.ngram_accept
    engine._observe_acceptance(Proposals(ProposalTree.root(5), ngram_budget=4), Verdict([], 7))
    assert rates[0].value < 0.5 and rates[1].value == 0.5  # nothing found: the first token rejected
    found = Proposals(ProposalTree.root(5), ngram_budget=4)
    found.ngram_nodes.update(found.tree.add_path([8, 9], budget=5))
    engine._observe_acceptance(found, Verdict(sorted(found.ngram_nodes), 7))
    assert rates[1].value > 0.5 and rates[2].value < 0.5  # two of the planned four: the third rejected
    assert rates[3].value == 0.5
