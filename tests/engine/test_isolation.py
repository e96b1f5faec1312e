"""One sequence's failure ends that sequence only; degenerate sampling values are normal input."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import LlamaForCausalLM

from tests.engine.helpers import greedy_request, hf_greedy, random_runner, run_all
from tests.engine.test_engine_greedy import MODES, prompts
from worker.engine import engine as engine_module
from worker.engine.engine import EngineConfig, SpecEngine
from worker.engine.llama import LlamaModel
from worker.engine.sampling import make_generator, target_probs
from worker.engine.types import GenerationRequest, SamplingParams


def test_a_sequence_that_raises_fails_alone(
    tiny_hf: LlamaForCausalLM, tiny_model: LlamaModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_verify = engine_module.verify_tree
    calls = {"bad": 0}

    def verify(tree: Any, logits: torch.Tensor, params: SamplingParams, generator: Any, *drafted: Any) -> Any:
        if params.max_new_tokens == 33:  # the faulty request, on its third step
            calls["bad"] += 1
            if calls["bad"] == 3:
                raise RuntimeError("injected sampling fault")
        return real_verify(tree, logits, params, generator, *drafted)

    monkeypatch.setattr(engine_module, "verify_tree", verify)
    engine = SpecEngine(
        tiny_model,
        EngineConfig(max_batch=3, max_seq_len=256, spec=MODES["hybrid_tree"]),
        random_runner(tiny_model, 48),
    )
    good = prompts(3, seed=5)
    requests = [greedy_request(f"ok{i}", p, 20) for i, p in enumerate(good)]
    requests.insert(1, greedy_request("bad", prompts(1, seed=6)[0], 33))
    events = []
    for request in requests:
        engine.submit(request)
    while engine.has_work():
        events += engine.step()
    failed = [e for e in events if e.finish_reason == "error"]
    assert [e.request_id for e in failed] == ["bad"]
    assert failed[0].error is not None and "injected sampling fault" in failed[0].error
    for i, prompt in enumerate(good):
        tokens = [t for e in events if e.request_id == f"ok{i}" for t in e.token_ids]
        assert tokens == hf_greedy(tiny_hf, prompt, 20)


@pytest.mark.parametrize("temperature", [1e-40, 5e-324, 1e-6])
def test_tiny_temperatures_decode_greedily(
    temperature: float, tiny_hf: LlamaForCausalLM, tiny_model: LlamaModel
) -> None:
    engine = SpecEngine(tiny_model, EngineConfig(max_batch=2, max_seq_len=256, spec=MODES["hybrid_tree"]))
    prompt = prompts(1, seed=7)[0]
    params = SamplingParams(max_new_tokens=16, temperature=temperature, top_p=1e-9, seed=2**63 - 1)
    outputs, _ = run_all(engine, [GenerationRequest("t", prompt, params)])
    assert outputs["t"] == hf_greedy(tiny_hf, prompt, 16)


def test_degenerate_distributions_stay_finite() -> None:
    logits = torch.tensor([3e38, -3e38, 0.0, float("nan")])
    for params in (SamplingParams(1, 1e-4), SamplingParams(1, 2.0, top_p=5e-324), SamplingParams(1, 1.0)):
        probs = target_probs(logits, params)
        assert torch.isfinite(probs).all() and abs(float(probs.sum()) - 1.0) < 1e-5
        assert int(probs.argmax()) == 0


def test_any_seed_makes_a_generator() -> None:
    for seed in (0, 2**63 - 1, 2**64 + 5, 10**30):
        generator = make_generator(SamplingParams(1, 1.0, seed=seed))
        assert generator is not None and generator.initial_seed() == seed % 2**64


def test_queue_time_counts_the_wait_for_a_batch_slot(tiny_model: LlamaModel) -> None:
    """With one slot, the second request waits while the first decodes: its queue time is the longer."""
    engine = SpecEngine(tiny_model, EngineConfig(max_batch=1, max_seq_len=256, spec=MODES["hybrid_tree"]))
    first, second = prompts(2, seed=9)
    _, stats = run_all(engine, [greedy_request("first", first, 24), greedy_request("second", second, 4)])
    assert 0.0 <= stats["first"].queue_seconds < stats["second"].queue_seconds
