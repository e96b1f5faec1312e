"""Domain labels: the request's label wins; otherwise a heuristic tells code, chat and prose apart."""

from __future__ import annotations

import pytest

from worker.traces.domain import detect_domain, resolve_domain

CODE = """def mean(values):
    total = 0
    for value in values:
        total += value
    return total / len(values)
"""
CHAT = "Hi! Can you help me plan a trip to Lisbon? I have three days and I love food."
PROSE = (
    "The northern lights appear when charged particles from the sun collide with gases in the upper "
    "atmosphere. Their colours depend on the altitude and the gas involved, green from oxygen and red "
    "at greater heights."
)


@pytest.mark.parametrize(
    ("text", "domain"),
    [
        (CODE, "code"),
        ("for (int i = 0; i < n; i++) { sum += a[i]; }", "code"),
        ("Here is the fix:\n```\nx = 1\n```", "code"),
        (CHAT, "chat"),
        ("Thanks, that works. Could you also explain why?", "chat"),
        (PROSE, "prose"),
        ("", "prose"),
    ],
)
def test_detects_domain(text: str, domain: str) -> None:
    assert detect_domain(text) == domain


def test_request_label_wins_unless_invalid() -> None:
    assert resolve_domain("legal", CODE) == ("legal", "request")
    assert resolve_domain(None, CODE) == ("code", "detected")
    assert resolve_domain("bad label!", CHAT) == ("chat", "detected")
