"""Replay: recent traces weigh most, domains are drawn evenly, and a quiet domain is not forgotten."""

from __future__ import annotations

from collections import Counter

import pytest

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
