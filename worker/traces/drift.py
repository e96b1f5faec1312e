"""Drift statistics over windows of finished requests, and a shift detector for the trainer.

Each window of ``window_requests`` traces records the domain mix, the acceptance length per
domain, and how far its output-token distribution and domain mix moved from a reference made of
the preceding ``reference_windows`` windows. A shift is flagged when either distance crosses its
threshold; the trainer then keeps its learning rate raised for ``trainer_shift_boost_rounds``.

Token divergence is judged above a noise floor measured on the traffic itself: the largest
divergence of one reference window from the rest of the reference. Requests are not independent
tokens (each prompt brings its own identifiers and topic), so two windows of a few dozen requests of
unchanged traffic already differ by more than a fixed threshold tuned on large windows would allow;
the floor grows as windows shrink or traffic gets more varied, and a shift must clear it by
``js_threshold``. Until two reference windows exist there is no floor and tokens flag nothing. A
window that shifts starts a new reference: the old traffic no longer describes what arrives, and a
reference spanning two domains would raise the floor enough to hide the next shift (`borealis bench
drift` measures false alarms and caught shifts on real outputs).

Divergence is Jensen-Shannon in bits over the ``top_tokens`` most frequent tokens of both
distributions, the long tail pooled into one bucket: rare identifiers differ between any two
samples of the same traffic, and keeping them would make sampling noise look like drift.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from borealis.settings import DriftSettings
from borealis.wire import TraceRecord

TOP_TOKENS = 256


def js_divergence(p: Mapping[Any, float], q: Mapping[Any, float], top: int = TOP_TOKENS) -> float:
    """Jensen-Shannon divergence in bits between two histograms: 0 when equal, 1 when disjoint."""
    p_total, q_total = float(sum(p.values())), float(sum(q.values()))
    if p_total <= 0 or q_total <= 0:
        raise ValueError("both histograms need mass")
    pooled = Counter({k: v / p_total for k, v in p.items()})
    pooled.update({k: v / q_total for k, v in q.items()})
    keys = [k for k, _ in pooled.most_common(top)]
    pv = np.array([p.get(k, 0.0) for k in keys] + [0.0]) / p_total
    qv = np.array([q.get(k, 0.0) for k in keys] + [0.0]) / q_total
    pv[-1], qv[-1] = max(0.0, 1.0 - pv[:-1].sum()), max(0.0, 1.0 - qv[:-1].sum())
    mid = (pv + qv) / 2
    return float(np.clip((_kl_bits(pv, mid) + _kl_bits(qv, mid)) / 2, 0.0, 1.0))


def total_variation(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """Half the L1 distance between two normalised mixes: the share of traffic that moved."""
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))


def _kl_bits(p: np.ndarray, q: np.ndarray) -> float:
    mask = p > 0
    return float(np.sum(p[mask] * np.log2(p[mask] / q[mask])))


def _normalise(counts: Counter[str]) -> dict[str, float]:
    total = sum(counts.values())
    return {k: v / total for k, v in sorted(counts.items())}


@dataclass(frozen=True)
class DriftWindow:
    index: int
    requests: int
    tokens: int
    started_at: float
    ended_at: float
    domain_mix: dict[str, float]
    acceptance_by_domain: dict[str, float]  # tokens per target step, domains that speculated
    divergence: float | None  # None until a reference with enough tokens exists
    divergence_floor: float | None  # the reference windows' own divergence from each other (no shift)
    mix_shift: float | None
    shift: bool


@dataclass
class _Window:
    tokens: Counter[int] = field(default_factory=Counter)
    domains: Counter[str] = field(default_factory=Counter)
    emitted: Counter[str] = field(default_factory=Counter)  # accepted proposals + steps, per domain
    steps: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    started_at: float = float("inf")
    ended_at: float = 0.0

    def add(self, record: TraceRecord) -> None:
        self.tokens.update(record.output_ids)
        self.domains[record.domain] += 1
        if record.steps:
            self.steps[record.domain] += len(record.steps)
            self.emitted[record.domain] += len(record.steps) + sum(s.accepted for s in record.steps)
        self.requests += 1
        self.started_at = min(self.started_at, record.finished_at)
        self.ended_at = max(self.ended_at, record.finished_at)


class DriftMonitor:
    def __init__(
        self,
        window_requests: int,
        reference_windows: int,
        js_threshold: float,
        mix_threshold: float,
        min_tokens: int = 1000,
        history: int = 1000,
    ) -> None:
        """``min_tokens``: fewer tokens in the window or the reference give no divergence (too noisy)."""
        self.window_requests = window_requests
        self.js_threshold = js_threshold
        self.mix_threshold = mix_threshold
        self.min_tokens = min_tokens
        self._current = _Window()
        self._reference: deque[_Window] = deque(maxlen=reference_windows)
        self._windows: deque[DriftWindow] = deque(maxlen=history)
        self._index = 0

    @classmethod
    def from_settings(cls, settings: DriftSettings) -> DriftMonitor:
        return cls(
            window_requests=settings.window_requests,
            reference_windows=settings.reference_windows,
            js_threshold=settings.js_threshold,
            mix_threshold=settings.mix_threshold,
        )

    @property
    def windows(self) -> list[DriftWindow]:
        return list(self._windows)

    def observe(self, record: TraceRecord) -> DriftWindow | None:
        """Count one finished request; returns the window it completes, if any."""
        self._current.add(record)
        if self._current.requests < self.window_requests:
            return None
        window = self._close(self._current)
        if window.shift:
            self._reference.clear()  # the old traffic no longer describes what arrives
        self._reference.append(self._current)
        self._current = _Window()
        self._windows.append(window)
        return window

    def _close(self, current: _Window) -> DriftWindow:
        divergence = floor = mix_shift = None
        reference_tokens: Counter[int] = Counter()
        reference_domains: Counter[str] = Counter()
        for past in self._reference:
            reference_tokens.update(past.tokens)
            reference_domains.update(past.domains)
        if reference_domains:
            mix_shift = total_variation(_normalise(current.domains), _normalise(reference_domains))
        tokens = sum(current.tokens.values())
        if tokens >= self.min_tokens and sum(reference_tokens.values()) >= self.min_tokens:
            divergence = js_divergence(current.tokens, reference_tokens)
            floor = self._noise_floor(reference_tokens)
        shift = (divergence is not None and floor is not None and divergence - floor > self.js_threshold) or (
            mix_shift is not None and mix_shift > self.mix_threshold
        )
        window = DriftWindow(
            index=self._index,
            requests=current.requests,
            tokens=tokens,
            started_at=current.started_at,
            ended_at=current.ended_at,
            domain_mix=_normalise(current.domains),
            acceptance_by_domain={d: current.emitted[d] / n for d, n in sorted(current.steps.items())},
            divergence=divergence,
            divergence_floor=floor,
            mix_shift=mix_shift,
            shift=shift,
        )
        self._index += 1
        return window

    def _noise_floor(self, reference_tokens: Counter[int]) -> float | None:
        """The largest divergence of one reference window from the others: what unchanged traffic
        shows at this window size. None with fewer than two usable reference windows."""
        divergences = []
        for past in self._reference:
            rest = reference_tokens - past.tokens
            if sum(past.tokens.values()) >= self.min_tokens and sum(rest.values()) >= self.min_tokens:
                divergences.append(js_divergence(past.tokens, rest))
        return max(divergences) if divergences else None
