"""`borealis bench shift` arithmetic: windows, acceptance length, recovery after a shift."""

from __future__ import annotations

from worker.bench.clients import Outcome
from worker.bench.shift import Served, acceptance_length, phase_prompts, recovery_requests, windows
from worker.workloads import build_prompts


def served(index: int, domain: str, steps: int, accepted: int) -> Served:
    spec = {"num_steps": steps, "num_accepted_tokens": accepted, "draft_version": "v1"}
    outcome = Outcome(index, 0, float(index), float(index) + 1.0, "200", steps + accepted, spec)
    return Served(outcome, domain)


def test_acceptance_length_is_emitted_tokens_per_target_step_over_requests() -> None:
    outcomes = [served(0, "code", 10, 10), served(1, "code", 30, 0)]
    assert acceptance_length(outcomes) == (40 + 10) / 40
    assert acceptance_length([]) is None


def test_windows_never_straddle_a_phase_boundary() -> None:
    outcomes = [served(i, "code", 10, 10) for i in range(5)] + [
        served(5 + i, "prose", 10, 0) for i in range(3)
    ]
    series = windows(outcomes, 4)
    assert [(w["domain"], w["requests"]) for w in series] == [("code", 4), ("code", 5), ("prose", 8)]
    assert series[0]["mean_acceptance_length"] == 2.0
    assert series[2]["mean_acceptance_length"] == 1.0


def test_recovery_counts_requests_until_within_ten_percent_of_the_pre_shift_level() -> None:
    code = [served(i, "code", 10, 10) for i in range(4)]  # level 2.0
    prose = [served(4 + i, "prose", 10, a) for i, a in enumerate([0, 0, 5, 5, 9, 9])]
    series = windows(code + prose, 2)  # prose windows: 1.0, 1.5, 1.9
    assert recovery_requests(series, ["code", "prose"]) == {"code->prose": 6}
    never = windows(code + prose[:4], 2)
    assert recovery_requests(never, ["code", "prose"]) == {"code->prose": None}


def test_phases_hold_distinct_prompts_unseen_by_the_static_draft() -> None:
    prompts = phase_prompts(["code", "prose", "chat"], 64)
    assert [p.domain for p in prompts] == ["code"] * 64 + ["prose"] * 64 + ["chat"] * 64
    for start in (0, 64, 128):
        assert len({p.key for p in prompts[start : start + 64]}) == 64
    static_training = {p.key for p in build_prompts("code", "train")}
    assert not static_training & {p.key for p in prompts}
