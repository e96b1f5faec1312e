"""Drift: a real code-to-prose shift is flagged; two halves of the same traffic are not."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from borealis.wire import TraceRecord
from tests.traces.helpers import code_text, make_record, prose_text, request_chunks, toy_ids
from worker.traces.drift import DriftMonitor, DriftWindow, js_divergence, total_variation

REQUEST_TOKENS = 100
WINDOW = 50  # requests: 5,000 output tokens a window


def _records(chunks: list[list[int]], domain: str, start: int = 0) -> list[TraceRecord]:
    return [
        make_record(f"{domain}{start + i}", domain=domain, output_ids=chunk, finished_at=1e9 + start + i)
        for i, chunk in enumerate(chunks)
    ]


def _observe(monitor: DriftMonitor, records: list[TraceRecord]) -> list[DriftWindow]:
    return [window for record in records if (window := monitor.observe(record)) is not None]


def _monitor() -> DriftMonitor:
    return DriftMonitor(window_requests=WINDOW, reference_windows=3, js_threshold=0.1, mix_threshold=0.3)


def test_divergence_and_mix_distance_basics() -> None:
    assert js_divergence({1: 5, 2: 5}, {1: 1, 2: 1}) == pytest.approx(0.0)
    assert js_divergence({1: 3}, {2: 7}) == pytest.approx(1.0)
    assert 0.0 < js_divergence({1: 3, 2: 1}, {1: 1, 2: 3}) < 1.0
    assert total_variation({"code": 1.0}, {"code": 0.25, "prose": 0.75}) == pytest.approx(0.75)


def _histogram(chunks: list[list[int]]) -> Counter[int]:
    return Counter(token for chunk in chunks for token in chunk)


def test_divergence_separates_code_from_prose_but_not_halves_of_one_stream() -> None:
    code = request_chunks(toy_ids(code_text()), REQUEST_TOKENS, seed=0)
    prose = request_chunks(toy_ids(prose_text()), REQUEST_TOKENS, seed=0)
    half = len(code) // 2
    assert js_divergence(_histogram(code[:half]), _histogram(code[half:])) < 0.05
    assert js_divergence(_histogram(prose[:half]), _histogram(prose[half : 2 * half])) < 0.05
    assert js_divergence(_histogram(code[:half]), _histogram(prose[:half])) > 0.1


def test_windows_of_the_same_traffic_show_no_shift() -> None:
    chunks = request_chunks(toy_ids(code_text()), REQUEST_TOKENS, seed=0)[: 8 * WINDOW]
    windows = _observe(_monitor(), _records(chunks, "code"))
    assert len(windows) == 8
    measured = [w for w in windows if w.divergence is not None]
    assert len(measured) == 7
    assert not any(w.shift for w in windows)
    assert max(w.divergence for w in measured if w.divergence is not None) < 0.1


def test_a_code_to_prose_shift_is_detected_by_the_token_distribution() -> None:
    code = request_chunks(toy_ids(code_text()), REQUEST_TOKENS, seed=0)[: 4 * WINDOW]
    prose = request_chunks(toy_ids(prose_text()), REQUEST_TOKENS, seed=0)[: 4 * WINDOW]
    monitor = _monitor()
    # one label for all traffic: only the tokens can reveal the shift
    before = _observe(monitor, _records(code, "mixed"))
    after = _observe(monitor, _records(prose, "mixed", start=len(code)))
    assert not any(w.shift for w in before)
    first = after[0]
    assert first.shift and first.divergence is not None and first.divergence > 0.1
    assert first.mix_shift == 0.0
    assert after[-1].divergence is not None and after[-1].divergence < 0.1  # the reference caught up


def test_windows_report_domain_mix_and_acceptance() -> None:
    monitor = DriftMonitor(window_requests=4, reference_windows=1, js_threshold=0.1, mix_threshold=0.3)
    records = [
        make_record("a", domain="code", accepted=2),
        make_record("b", domain="code", accepted=0),
        make_record("c", domain="prose", accepted=1),
        make_record("d", domain="prose", accepted=1),
    ]
    (window,) = _observe(monitor, records)
    assert window.domain_mix == {"code": 0.5, "prose": 0.5}
    assert window.acceptance_by_domain == {"code": 2.0, "prose": 2.0}
    assert window.divergence is None and not window.shift  # no reference yet
    (second,) = _observe(monitor, [make_record(str(i), domain="chat") for i in range(4)])
    assert second.mix_shift == pytest.approx(1.0) and second.shift


def _topical(seed: int, requests: int, common_base: int) -> list[list[int]]:
    """Requests of one domain, each on one of many topics: shared words plus the topic's own."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, 301)
    common, p = common_base + np.arange(300), weights / weights.sum()
    chunks = []
    for _ in range(requests):
        own = 10_000 + int(rng.integers(60)) * 40 + np.arange(40)
        shared = rng.random(100) < 0.6
        chunks.append([int(rng.choice(common, p=p)) if s else int(rng.choice(own)) for s in shared])
    return chunks


def test_small_windows_of_varied_traffic_are_judged_above_their_own_noise_floor() -> None:
    """Sixteen requests of topical traffic differ by more than a fixed 0.1 with no shift at all (real
    SmolLM2 chat does too, see `borealis bench drift`); only the change of domain clears the floor."""
    monitor = DriftMonitor(window_requests=16, reference_windows=3, js_threshold=0.1, mix_threshold=0.3)
    before = _observe(monitor, _records(_topical(0, 16 * 8, common_base=0), "mixed"))
    after = _observe(monitor, _records(_topical(1, 16 * 4, common_base=5000), "mixed", start=16 * 8))
    scored = [w for w in before if w.divergence is not None]
    assert any(w.divergence is not None and w.divergence > 0.1 for w in scored)  # a fixed 0.1 would fire
    assert not any(w.shift for w in before)
    assert all(w.divergence_floor is not None for w in scored[1:])
    assert after[0].shift and [w.shift for w in after[1:]] == [False] * (len(after) - 1)
