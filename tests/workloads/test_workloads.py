"""Workloads are deterministic, split cleanly, and differ by domain."""

from __future__ import annotations

import pytest

from worker.workloads import DOMAINS, build_prompts


@pytest.mark.parametrize("domain", DOMAINS)
def test_domains_are_deterministic_and_disjoint(domain: str) -> None:
    train = build_prompts(domain, "train", limit=40)
    test = build_prompts(domain, "test", limit=40)
    assert len(train) == 40 and len(test) == 40
    assert build_prompts(domain, "test", limit=40) == test
    assert not {p.key for p in train} & {p.key for p in test}
    assert all(p.domain == domain and p.text.strip() for p in train + test)


def test_domains_look_different() -> None:
    code = build_prompts("code", "test", limit=20)
    prose = build_prompts("prose", "test", limit=20)
    chat = build_prompts("chat", "test", limit=20)
    assert all(p.text.startswith("def ") for p in code)
    assert sum("def " in p.text for p in prose) < 5
    assert all(p.chat and "```python" in p.text for p in chat)


def test_mixed_interleaves_domains() -> None:
    mixed = build_prompts("mixed", "test", limit=9)
    assert [p.domain for p in mixed[:3]] == list(DOMAINS)
    with pytest.raises(ValueError):
        build_prompts("poetry", "test")


def test_humaneval_is_read_offline_from_the_wheel_and_split_by_task() -> None:
    train, test = build_prompts("humaneval", "train"), build_prompts("humaneval", "test")
    assert len(train) + len(test) == 164  # every HumanEval problem, once
    assert not {p.key for p in train} & {p.key for p in test}
    assert all(p.domain == "code" and not p.chat and "def " in p.text for p in train + test)
    assert {p.key for p in test} >= {"humaneval:HumanEval/68"}  # the split never moves
