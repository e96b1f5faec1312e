"""Replay: recent traces weigh most, domains are drawn evenly, and a quiet domain is not forgotten."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from borealis.wire import TraceRecord
from tests.traces.helpers import make_record
from worker.traces.replay import ReplayBuffer

T0 = 1_700_000_000.0


def test_sampling_favours_recent_records() -> None:
    buffer = ReplayBuffer(max_records=10_000, max_tokens=10**7, half_life_s=100.0, seed=0)
    for i in range(1000):
        buffer.add(make_record(f"r{i}", finished_at=T0 + i))
    ages = [T0 + 999 - r.finished_at for r in buffer.sample(5000)]
    newest = sum(age < 100 for age in ages) / len(ages)
    oldest = sum(age >= 900 for age in ages) / len(ages)
    assert newest == pytest.approx(0.5, abs=0.04)  # one half-life holds half the weight
    assert oldest < 0.01


def test_draws_are_balanced_across_domains() -> None:
    buffer = ReplayBuffer(max_records=10_000, max_tokens=10**7, half_life_s=1e9, seed=1)
    for domain, count in (("code", 900), ("prose", 90), ("chat", 10)):
        for i in range(count):
            buffer.add(make_record(f"{domain}{i}", domain=domain, finished_at=T0 + i))
    shares = Counter(r.domain for r in buffer.sample(3000))
    assert all(shares[d] / 3000 == pytest.approx(1 / 3, abs=0.04) for d in ("code", "prose", "chat"))
    proportional = ReplayBuffer(10_000, 10**7, 1e9, domain_balance=0.0, seed=1)
    for domain, count in (("code", 900), ("prose", 90), ("chat", 10)):
        for i in range(count):
            proportional.add(make_record(f"{domain}{i}", domain=domain, finished_at=T0 + i))
    shares = Counter(r.domain for r in proportional.sample(3000))
    assert shares["code"] / 3000 == pytest.approx(0.9, abs=0.03)


def test_bounds_evict_from_the_largest_domain_so_old_domains_survive() -> None:
    buffer = ReplayBuffer(max_records=100, max_tokens=10**7, half_life_s=60.0, seed=2)
    for i in range(100):
        buffer.add(make_record(f"code{i}", domain="code", finished_at=T0 + i))
    for i in range(1000):  # a long prose phase after the code phase
        buffer.add(make_record(f"prose{i}", domain="prose", finished_at=T0 + 100 + i))
    assert len(buffer) == 100
    assert buffer.domain_counts() == {"code": 50, "prose": 50}
    kept_prose = sorted(r.finished_at for r in buffer.sample(500) if r.domain == "prose")
    assert kept_prose[0] >= T0 + 100 + 950  # the newest prose stays, older prose went first


def test_token_bound_holds() -> None:
    buffer = ReplayBuffer(max_records=10_000, max_tokens=1000, half_life_s=60.0)
    for i in range(100):
        assert buffer.add(make_record(f"r{i}", prompt_ids=[1] * 20, output_ids=[2] * 30))
    assert buffer.tokens <= 1000 and len(buffer) == 20
    assert not buffer.add(make_record("huge", prompt_ids=[1] * 1001, output_ids=[]))


def test_no_caller_holds_more_than_its_share_while_others_contribute() -> None:
    from worker.traces.replay import cap_shares

    weights = np.ones(100)
    burst = ["anonymous"] * 90 + ["key-1"] * 10
    capped = cap_shares(weights, burst, 0.5)
    assert capped[:90].sum() / capped.sum() == pytest.approx(0.5)
    three = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    capped = cap_shares(weights, three, 0.4)
    shares = {o: capped[[i for i, x in enumerate(three) if x == o]].sum() / capped.sum() for o in "abc"}
    assert shares["a"] == pytest.approx(0.4) and shares["b"] / shares["c"] == pytest.approx(1.5)
    assert np.array_equal(cap_shares(weights, ["solo"] * 100, 0.5), weights)


def test_the_held_out_set_is_not_one_callers_burst() -> None:
    from worker.training.heldout import newest_with_caller_cap

    def trace(i: int, caller: str) -> TraceRecord:
        return TraceRecord(
            request_id=f"r{i}",
            model="m",
            domain="code",
            domain_source="request",
            caller=caller,
            started_at=float(i),
            finished_at=float(i),
            finish_reason="length",
            prompt_ids=[1],
            output_ids=[2],
        )

    older = [trace(i, "key-1") for i in range(20)]
    burst = [trace(100 + i, "anonymous") for i in range(50)]
    chosen = newest_with_caller_cap(older + burst, 16, 0.5)
    assert len(chosen) == 16
    assert sum(r.caller == "anonymous" for r in chosen) == 8
    assert [r.finished_at for r in chosen] == sorted(r.finished_at for r in chosen)
    alone = newest_with_caller_cap(burst, 16, 0.5)  # nobody else to yield to: the newest fill it
    assert [r.request_id for r in alone] == [f"r{100 + i}" for i in range(34, 50)]
