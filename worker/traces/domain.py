"""Traffic domain labels: the request's own label when it gives one, else a cheap text heuristic.

The label only steers replay balance and drift statistics, so a fast, explainable guess beats a
model: it runs on the serving side for every request and must cost microseconds, not a forward.
"""

from __future__ import annotations

import re
from typing import Literal

Domain = Literal["code", "prose", "chat"]
DomainSource = Literal["request", "detected"]

SAMPLE_CHARS = 4000  # enough to judge; bounds the cost on huge prompts
_LABEL = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_CODE_LINE = re.compile(
    r"^\s*(def|class|import|from|return|if|elif|else|for|while|try|except|with|function|const|let|var|"
    r"public|private|static|fn|func|package|#include|SELECT|INSERT)\b"
    r"|[{};:]\s*$|=>|==|!=|->|\w\(.*\)\s*$|^\s{4,}\S|^\s*(#|//)",
)
_CODE_SYMBOLS = frozenset("{}[]()<>=;_#*/\\|&$")
_CHAT_MARKERS = re.compile(
    r"\b(i|i'm|i've|me|my|you|your|you're|we|hi|hello|hey|thanks|thank|please|can|could|would)\b|\?",
    re.IGNORECASE,
)


def detect_domain(text: str) -> Domain:
    """``code`` if lines look like source or symbols are dense, ``chat`` if conversational, else ``prose``."""
    sample = text[:SAMPLE_CHARS]
    if "```" in sample or _code_score(sample) >= 0.35:
        return "code"
    words = max(1, len(sample.split()))
    if len(_CHAT_MARKERS.findall(sample)) / words >= 0.08:
        return "chat"
    return "prose"


def resolve_domain(requested: str | None, text: str) -> tuple[str, DomainSource]:
    """Prefer the caller's label (it knows its traffic); an invalid or missing one is detected instead."""
    if requested and _LABEL.match(requested):
        return requested, "request"
    return detect_domain(text), "detected"


def _code_score(sample: str) -> float:
    """The larger of the share of code-looking lines and a scaled density of code symbols."""
    lines = [line for line in sample.splitlines() if line.strip()]
    if not lines:
        return 0.0
    line_share = sum(1 for line in lines if _CODE_LINE.search(line)) / len(lines)
    visible = [ch for ch in sample if not ch.isspace()]
    symbol_density = sum(1 for ch in visible if ch in _CODE_SYMBOLS) / max(1, len(visible))
    return max(line_share, symbol_density * 4)
