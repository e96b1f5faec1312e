"""Each request reports its decoding time and the engine's estimate of that time without speculation."""

from __future__ import annotations

import time

import pytest

from tests.engine.helpers import greedy_request, random_runner, run_all
from tests.engine.test_engine_greedy import MODES, prompts
from worker.engine.adaptive import SpeculationController
from worker.engine.engine import EngineConfig, SpecEngine
from worker.engine.llama import LlamaModel


def test_plain_steps_measure_the_baseline_per_batch_size_then_periodically() -> None:
    controller = SpeculationController(4, 4, 1, baseline_every=8)
    assert controller.baseline_due(1)  # no plain step measured at batch 1 yet
    controller.observe_target(1, 0.01)
    due = [controller.baseline_due(1) for _ in range(16)]
    assert [i for i, d in enumerate(due) if d] == [7, 15]
    assert controller.baseline_due(3)  # a new batch size is measured first


@pytest.mark.parametrize("mode", ["target_only", "hybrid_tree", "adaptive_tree"])
def test_requests_carry_decode_time_shares_and_target_only_estimates(
    mode: str, tiny_model: LlamaModel
) -> None:
    engine = SpecEngine(
        tiny_model,
        EngineConfig(max_batch=3, max_seq_len=256, spec=MODES[mode]),
        random_runner(tiny_model, 48),
    )
    requests = [greedy_request(f"r{i}", p, 24) for i, p in enumerate(prompts(5, seed=6))]
    started = time.perf_counter()
    _, stats = run_all(engine, requests)
    elapsed = time.perf_counter() - started
    assert all(s.decode_seconds > 0 and s.target_only_seconds > 0 for s in stats.values())
    assert all(s.prefill_seconds > 0 for s in stats.values())
    # shares of batched steps, and prefills apart from them: together never more than the run took
    assert sum(s.prefill_seconds + s.decode_seconds for s in stats.values()) <= elapsed
    assert all(s.speedup_over_target_only is not None for s in stats.values())
