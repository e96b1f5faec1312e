"""The speculation controller: the draft rule for sampled requests, costs of unmeasured widths, and
what the engine charges it for drafting and tells it about acceptance."""

from __future__ import annotations

import random
import time
from itertools import accumulate

import pytest
import torch

from tests.engine.helpers import greedy_request, random_runner, run_all
from tests.engine.test_engine_greedy import MODES
from worker.engine.adaptive import Plan, SpeculationController
from worker.engine.engine import EngineConfig, SpecConfig, SpecEngine
from worker.engine.llama import LlamaModel, causal_step_input
from worker.engine.ngram import UnverifiedLookup
from worker.engine.proposals import DraftBatch, Proposals, draft_paths
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


def test_steps_wider_than_any_measured_follow_a_slope_measured_over_a_span() -> None:
    """Two neighbouring counts measured alike (8 and 9 rows at batch 8, pooled by noise into one cost)
    say nothing of what 56 rows cost: extrapolated along them, every wider step cost what 8 rows do and
    the planner verified 56 rows for a fraction of a token. A slope comes from counts at least a factor
    of two apart, else the prior one."""
    controller = SpeculationController(4, 6, 3)
    controller.observe_target(8, 0.049)
    controller.observe_target(9, 0.048)
    pooled = controller.target_ms(9)
    assert controller.target_ms(56) == pytest.approx(pooled * (1 + 0.02 * 55) / (1 + 0.02 * 8))
    for _ in range(30):  # a lookup whose first token is right a third of the time
        controller.observe_ngram_acceptance(6, 1)
        controller.observe_ngram_acceptance(6, 0)
        controller.observe_ngram_acceptance(6, 0)
    # its first token pays at the prior's cost of 8 more rows; all six (56 rows, as cheap as 8 when
    # extrapolated along 8 and 9) do not
    assert controller._best_plan(8, [6] * 8, False) == Plan(0, 1)
    controller.observe_target(4, 0.030)  # now a span of more than half of 9 rows: its slope
    assert controller.target_ms(56) == pytest.approx(pooled + (pooled - 30) / 5 * 47)
    assert controller.target_ms(6) == pytest.approx(30 + (pooled - 30) / 4 * 2)  # between counts: as before


def test_a_wider_step_measured_cheaper_is_costed_as_the_narrower_one() -> None:
    controller = SpeculationController(4, 4, 3)
    for _ in range(10):
        controller.observe_target(1, 0.014)
        controller.observe_target(4, 0.012)  # noise: 4 rows measured cheaper than 1
    controller.observe_target(2, 0.0142)
    controller.observe_target(8, 0.018)
    costs = [controller.target_ms(rows) for rows in range(1, 12)]
    assert costs == sorted(costs)
    pooled = (10 * 14 + 14.2 + 10 * 12) / 21  # each count weighted by its samples
    assert controller.target_ms(1) == controller.target_ms(4) == pytest.approx(pooled)
    assert controller.target_ms(6) == pytest.approx(pooled + (18 - pooled) / 2)
    # so a draft that never accepts is not planned: drafting and verifying 4 rows looked cheaper than 1
    controller.observe_draft(3, 0.001)
    for _ in range(50):
        controller.observe_draft_acceptance(3, 4, 0)
        controller.observe_draft_acceptance(1, 4, 0)
    assert controller._best_plan(1, [0], True) == Plan(0, 0)


def test_steps_timed_under_another_processs_load_leave_a_measured_cost_alone() -> None:
    """Wide steps timed while a trainer held the cores (their thread waiting a third of each step for
    one) do not raise the cost the planner keeps for them once it stops choosing them; a count never
    measured takes its first sample whatever the load, so the batch's baseline is always measured."""
    controller = SpeculationController(4, 4, 3)
    controller.observe_target(1, 0.010)
    controller.observe_target(5, 0.012)
    for _ in range(20):
        controller.observe_target(5, 0.036, waited=0.012)
    assert controller.target_ms(5) == pytest.approx(12)
    controller.observe_target(5, 0.013, waited=0.0005)  # a little waiting: an ordinary sample
    assert controller.target_ms(5) == pytest.approx(12.1)
    controller.observe_target(8, 0.040, waited=0.020)
    assert 8 in controller.target_ms.measured and not controller.baseline_due(8)


def test_a_switched_off_draft_is_probed_less_often_where_probes_cost_more() -> None:
    cheap, dear = SpeculationController(4, 4, 3), SpeculationController(4, 4, 3)
    for controller, wide_ms in ((cheap, 0.0105), (dear, 0.040)):
        controller.observe_target(1, 0.010)
        controller.observe_target(4, wide_ms)
        controller.observe_draft(3, 0.0001)
        for _ in range(200):  # the draft never accepts, as a tree nor as a chain: it is off
            controller.observe_draft_acceptance(3, 4, 0)
            controller.observe_draft_acceptance(1, 4, 0)
    for controller in (cheap, dear):
        plans = [controller.plan(1, [0], has_draft=True) for _ in range(400)]
        probes = [i for i, plan in enumerate(plans) if plan.draft_depth]
        interval = controller.probe_interval(1, plans[probes[0]])
        assert probes == [k * interval - 1 for k in range(1, len(probes) + 1)] and probes
    assert cheap.probe_interval(1, Plan(1, 0, 3)) == 16  # the floor: probes here cost little
    assert dear.probe_interval(1, Plan(1, 0, 3)) == 301  # (40 + 0.1 - 10) ms extra / (1 % of 10 ms)
    cheap.observe_catch_up(1, 0.050)  # bringing the draft's caches up to date before a probe: 50 ms
    assert cheap.probe_interval(1, Plan(1, 0, 3)) == 506  # (10.5 + 0.1 + 50 - 10) ms / (1 % of 10 ms)
    assert cheap.probe_interval(2, Plan(1, 0, 3)) > 506  # a wider batch has more rows to catch up
    dear.plan(1, [0], has_draft=True)
    dear.draft_changed()  # a new draft is probed at once, whatever the interval
    assert dear.plan(1, [0], has_draft=True).draft_depth == 1
    assert dear.plan(1, [0], has_draft=True).draft_depth == 0


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
        engine.controller,
        "observe_draft",
        lambda rows, s, later=None: (charged.append(s), observe(rows, s, later)),
    )
    run_all(engine, [greedy_request("r", list(range(3, 43)), 24)])
    assert steady_flags[0] is False and all(steady_flags[1:])  # the 40-token prompt, then steady steps
    assert len(charged) == len(steady_flags) and max(charged) < 0.1


def test_an_ngram_lookup_is_rated_on_the_tokens_it_found(tiny_model: LlamaModel) -> None:
    """The planner sees each lookup's length and pays only for found rows, so a lookup that found
    nothing tells nothing, and one that found two of four planned tokens is rated on those two."""
    engine = SpecEngine(tiny_model, EngineConfig(max_batch=1, max_seq_len=64, spec=MODES["ngram_chain"]))
    rates = engine.controller.ngram_accept
    engine._observe_acceptance(Proposals(ProposalTree.root(5), ngram_budget=4), Verdict([], 7))
    assert [rate.value for rate in rates] == [0.5] * len(rates)
    found = Proposals(ProposalTree.root(5), ngram_budget=4)
    found.ngram_nodes.update(found.tree.add_path([8, 9], budget=5))
    engine._observe_acceptance(found, Verdict(sorted(found.ngram_nodes), 7))
    assert rates[0].value > 0.5 and rates[1].value > 0.5 and rates[2].value == 0.5


def test_an_unverified_lookup_is_scored_once_the_committed_tokens_decide_it() -> None:
    lookup = UnverifiedLookup(start=3, guess=[7, 8, 9])
    assert lookup.accepted_run([1, 2, 3]) is None
    assert lookup.accepted_run([1, 2, 3, 7, 8]) is None
    assert lookup.accepted_run([1, 2, 3, 7, 8, 9]) == 3
    assert lookup.accepted_run([1, 2, 3, 7, 5]) == 1  # decided by the first miss
    assert lookup.accepted_run([1, 2, 3, 4]) == 0


def test_a_lookup_switched_off_comes_back_when_it_would_be_accepted(tiny_model: LlamaModel) -> None:
    """Rates that a stretch of misses drove to zero keep the lookup out of every plan; the lookups left
    out are scored on what the sequence commits, so once they would be accepted they are verified
    again (before, a fresh appliance's lookup stayed off for good after such a stretch)."""
    spec = SpecConfig(mode="chain", use_draft=False)
    engine = SpecEngine(tiny_model, EngineConfig(max_batch=1, max_seq_len=256, spec=spec))
    for rate in engine.controller.ngram_accept:
        rate.value = 0.0
    prompt = [5, 17, 33, 41, 60, 9] * 3
    outputs, stats = run_all(engine, [greedy_request("r", prompt, 120)])
    assert len(set(outputs["r"][-60:])) < 20, "the tiny target should loop: the test needs lookups to hit"
    assert engine.controller.ngram_accept[0].value > 0.5
    assert stats["r"].accepted_from_ngram > 0


def test_a_batch_pays_for_the_lookups_found_not_for_the_length_planned() -> None:
    """Batch 8, one sequence's lookup found four tokens it always gets accepted: verifying them costs
    4 more rows (12), not 4 per sequence (40), and adds half a token per sequence on average."""
    controller = SpeculationController(4, 4, 3)
    for rows, ms in ((8, 20.0), (12, 21.0), (40, 40.0)):
        controller.observe_target(rows, ms / 1000)
    for _ in range(100):
        controller.observe_ngram_acceptance(4, 4)
    assert _expected(controller, 0, 4, 0, coverage=[1 / 8] * 4) == pytest.approx(0.5, abs=0.01)
    assert controller.plan(8, [4, 0, 0, 0, 0, 0, 0, 0], has_draft=False) == Plan(0, 4)  # 1.5 / 21 > 1 / 20
    assert controller.plan(8, [0] * 8, has_draft=False) == Plan(0, 0)


def _flat_costs(controller: SpeculationController) -> None:
    """Every width costs the same: plans differ only in the tokens they are expected to accept."""
    controller.observe_target(1, 0.010)
    controller.observe_target(64, 0.010)
    controller.observe_draft(3, 0.0001)


def _expected(
    controller: SpeculationController,
    draft_depth: int,
    ngram_tokens: int,
    width: int,
    coverage: list[float] | None = None,
) -> float:
    """The accepted tokens the controller expects from one plan."""
    widths = [width] if draft_depth else []
    plans = controller.rated_plans(ngram_tokens, widths, coverage)
    rated = {(d, n, w): tokens for d, n, w, tokens in plans}
    return rated[(draft_depth, ngram_tokens, width if draft_depth else 0)]


def test_a_draft_that_accepts_where_the_lookup_misses_is_planned_beside_it() -> None:
    """Half the steps the lookup's four tokens are all accepted, the other half none, and there the
    draft's first two are: together they accept 3 tokens a step, either alone at most 2."""
    controller = SpeculationController(4, 4, 3)
    _flat_costs(controller)
    for _ in range(300):
        for ngram_run, draft_run in ((4, 0), (0, 2)):
            controller.observe_both(3, 4, ngram_run, draft_run)
            controller.observe_draft_acceptance(3, 4, draft_run)
            controller.observe_ngram_acceptance(4, ngram_run)
    assert _expected(controller, 0, 4, 3) == pytest.approx(2.0, abs=0.2)
    assert _expected(controller, 4, 0, 3) == pytest.approx(1.0, abs=0.2)
    assert _expected(controller, 2, 4, 3) == pytest.approx(3.0, abs=0.2)
    plan = controller.plan(1, [4], has_draft=True)
    assert plan.draft_depth >= 2 and plan.ngram_tokens == 4


def test_a_draft_that_accepts_only_where_the_lookup_does_adds_nothing_beside_it() -> None:
    controller = SpeculationController(4, 4, 3)
    _flat_costs(controller)
    controller.observe_target(64, 0.012)  # wider steps cost a little more
    for _ in range(300):
        for ngram_run, draft_run in ((4, 2), (0, 0)):
            controller.observe_both(3, 4, ngram_run, draft_run)
            controller.observe_draft_acceptance(3, 4, draft_run)
            controller.observe_ngram_acceptance(4, ngram_run)
    assert _expected(controller, 2, 4, 3) == pytest.approx(_expected(controller, 0, 4, 3), abs=0.05)
    assert controller.plan(1, [4], has_draft=True) == Plan(0, 4)


def test_a_chain_of_first_choices_is_planned_where_rows_cost_and_the_tree_where_they_do_not() -> None:
    """At batch 8 a width-3 tree verifies 3 rows per sequence per depth; a chain of the draft's first
    choices accepts less per depth but for a third of the rows."""
    controller = SpeculationController(4, 0, 3)
    for rows, ms in ((1, 10.0), (13, 11.0), (8, 20.0), (40, 30.0), (104, 100.0)):
        controller.observe_target(rows, ms / 1000)
    for rows, ms in ((1, 0.1), (3, 0.1), (8, 0.2), (24, 0.3)):
        controller.observe_draft(rows, ms / 1000)
    for _ in range(300):
        controller.observe_draft_acceptance(3, 4, 4)  # the tree accepts every depth 4 times in 5
        controller.observe_draft_acceptance(3, 4, 3)
        controller.observe_draft_acceptance(3, 4, 2)
        controller.observe_draft_acceptance(3, 4, 1)
        controller.observe_draft_acceptance(3, 4, 0)
        controller.observe_draft_acceptance(1, 4, 1)  # the chain of first choices accepts less
        controller.observe_draft_acceptance(1, 4, 0)
    assert _expected(controller, 4, 0, 3) > _expected(controller, 4, 0, 1)
    assert controller.plan(1, [0], has_draft=True).draft_width == 3
    assert controller.plan(8, [0] * 8, has_draft=True).draft_width == 1


def test_a_tree_step_also_rates_the_chain_of_the_drafts_first_choices(tiny_model: LlamaModel) -> None:
    engine = SpecEngine(tiny_model, EngineConfig(max_batch=1, max_seq_len=64), random_runner(tiny_model, 48))
    tree_rates, chain_rates = engine.controller.draft_accept[3], engine.controller.draft_accept[1]
    prop = Proposals(ProposalTree.root(5), draft_width=3)
    first, second = prop.tree.add_path([8, 9], budget=8)  # the draft's first choice at depths 1 and 2
    other = prop.tree.add(0, 11)  # its second choice at depth 1
    prop.draft_nodes.update({first: 0.5, second: 0.5, other: 0.3})
    prop.top_chain.update({first, second})
    engine._observe_acceptance(prop, Verdict([other], 7))
    assert tree_rates[0].value > 0.5 and tree_rates[1].value < 0.5  # the tree's second choice was right
    assert chain_rates[0].value < 0.5 and chain_rates[1].value == 0.5  # the chain's first token was not
    engine._observe_acceptance(prop, Verdict([first, second], 7))
    assert chain_rates[1].value > 0.5


def test_the_chain_of_first_choices_in_a_tree_is_what_a_chain_proposes(tiny_model: LlamaModel) -> None:
    """A tree step rates the chain by the nodes of the tree a chain would have proposed: the draft's
    first choice below the root, then below that, as far as the tree kept them."""
    runner = random_runner(tiny_model, 48)
    prompt = list(range(3, 15))
    _, features = tiny_model.forward(
        causal_step_input(torch.tensor([prompt]), [0]), tiny_model.new_cache(1, 64)
    )
    root = len(prompt) - 1
    proposals = {}
    for topk, width in ((3, 3), (1, 1)):
        cache = runner.new_cache(1, 64)
        runner.forward(
            causal_step_input(torch.tensor([prompt[1:root]]), [0]),
            runner.fuse(features[:, : root - 1]),
            cache,
        )
        batch = DraftBatch(tokens=[prompt], kv_lens=[root], draft_lens=[root - 1], features=features)
        proposals[width] = draft_paths(runner, cache, batch, 4, topk, width)[0]
    (chain,) = proposals[1].paths
    prop = Proposals(ProposalTree.root(prompt[root]))
    prop.add_draft(proposals[3], budget=1 + 4 * 3)
    depths = sorted(prop.tree.depths[node] for node in prop.top_chain)
    assert depths == list(range(1, len(depths) + 1)) and depths
    for node in prop.top_chain:
        assert prop.tree.tokens[node] == chain.tokens[prop.tree.depths[node] - 1]


def test_further_draft_passes_are_costed_apart_from_a_steps_first() -> None:
    """A step's first pass carries its drafting overhead; costing every depth like it kept a draft
    whose second depth pays at depth 1. Until a further pass is measured it costs as the first."""
    controller = SpeculationController(4, 0, 1)
    controller.observe_target(1, 0.010)
    controller.observe_target(5, 0.011)
    for _ in range(300):  # the first token accepted 3 times in 4, the second once in 3 after it
        for run in (2, 1, 1, 0):
            controller.observe_draft_acceptance(1, 3, run)
    controller.observe_draft(1, 0.0016)
    assert controller.drafting_ms(1)[3] == pytest.approx(3 * 1.6)
    assert controller.plan(1, [0], has_draft=True).draft_depth == 1  # a second 1.6 ms pass does not pay
    controller.observe_draft(1, 0.0016, later_seconds=0.0002)
    assert controller.drafting_ms(1)[3] == pytest.approx(1.6 + 2 * 0.2)
    assert controller.plan(1, [0], has_draft=True).draft_depth == 2


def test_a_draft_in_use_goes_a_depth_deeper_now_and_then() -> None:
    """A depth's rate moves only on steps that draft to it, so one bad stretch at depth 2 would keep
    the draft at depth 1 for good: one drafting step in ``probe_every`` goes a depth deeper, and once
    depth 2 accepts again it is planned."""
    controller = SpeculationController(4, 0, 1, probe_every=4)
    controller.observe_target(1, 0.010)
    controller.observe_target(64, 0.0125)  # a row costs a little: a bad second depth does not pay
    controller.observe_draft(1, 0.0001)
    for _ in range(100):
        controller.observe_draft_acceptance(1, 2, 1)  # the first token right, the second wrong
    plans = [controller.plan(1, [0], has_draft=True) for _ in range(8)]
    assert [plan.draft_depth for plan in plans] == [1, 1, 1, 2, 1, 1, 1, 2]
    for _ in range(100):
        controller.observe_draft_acceptance(1, 2, 2)  # what those deeper steps find: depth 2 is good now
    assert controller.plan(1, [0], has_draft=True).draft_depth >= 2


def test_draft_paths_report_when_each_pass_ends(tiny_model: LlamaModel) -> None:
    runner = random_runner(tiny_model, 48)
    prompt = list(range(3, 15))
    _, features = tiny_model.forward(
        causal_step_input(torch.tensor([prompt]), [0]), tiny_model.new_cache(1, 64)
    )
    batch = DraftBatch(tokens=[prompt], kv_lens=[len(prompt) - 1], draft_lens=[0], features=features)
    ends: list[float] = []
    started = time.perf_counter()
    draft_paths(runner, runner.new_cache(1, 64), batch, 3, 3, 3, ends)
    assert len(ends) == 3 and started < ends[0] < ends[1] < ends[2] < time.perf_counter()


def test_the_planner_skips_only_plans_that_cannot_pay() -> None:
    """Against rating every plan, over random rates and costs (measured counts in any order, costs
    not monotone in rows, as measured ones are not): the same plan every time."""
    rng = random.Random(7)
    for trial in range(300):
        controller = SpeculationController(5, 8, 3)
        for _ in range(rng.randint(0, 12)):
            controller.observe_target(rng.randint(1, 160), rng.uniform(0.005, 0.06))
        for _ in range(rng.randint(0, 3)):
            controller.observe_draft(
                rng.choice([1, 3, 8, 24]), rng.uniform(0.0001, 0.004), rng.uniform(0, 0.003)
            )
        for _ in range(rng.randint(0, 40)):
            controller.observe_draft_acceptance(rng.choice([1, 3]), 5, rng.choice([0, 0, 1, 2, 5]))
            controller.observe_ngram_acceptance(8, rng.choice([0, 1, 3, 8]))
        batch = rng.choice([1, 2, 4, 8])
        found = [rng.choice([0, 0, 1, 3, 8]) for _ in range(batch)]
        assert controller._best_plan(batch, found, True) == _every_plan_rated(controller, batch, found), trial


def _every_plan_rated(controller: SpeculationController, batch: int, found: list[int]) -> Plan:
    """The planner's choice with no plan skipped."""
    max_ngram = min(max(found), controller.max_ngram_tokens)
    reaching = [sum(f >= d for f in found) for d in range(1, max_ngram + 1)]
    ngram_rows = [0, *accumulate(reaching)]
    best, best_value = Plan(0, 0), 1.0 / controller.target_ms(batch)
    plans = controller.rated_plans(max_ngram, controller.widths, [count / batch for count in reaching])
    for depth, ngram, width, tokens in plans:
        rows = batch * (1 + depth * width) + ngram_rows[ngram]
        value = (1.0 + tokens) / (controller.target_ms(rows) + controller.drafting_ms(batch * width)[depth])
        if value > best_value:
            best, best_value = Plan(depth, ngram, width), value
    return best
