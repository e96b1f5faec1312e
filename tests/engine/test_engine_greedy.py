"""Greedy decoding through the engine must be token-identical to Hugging Face ``generate``."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import LlamaForCausalLM

from tests.engine.helpers import greedy_request, hf_greedy, random_runner, run_all
from worker.engine import native
from worker.engine.engine import EngineConfig, SpecConfig, SpecEngine
from worker.engine.llama import LlamaModel

MODES = {
    "target_only": SpecConfig(mode="off"),
    "ngram_chain": SpecConfig(mode="chain", use_draft=False, adaptive=False),
    "draft_chain": SpecConfig(mode="chain", use_ngram=False, adaptive=False, max_draft_depth=4),
    "hybrid_tree": SpecConfig(mode="tree", adaptive=False, max_draft_depth=3, tree_topk=4, tree_width=3),
    "adaptive_tree": SpecConfig(mode="tree"),
}


def prompts(count: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        base = [rng.randrange(3, 96) for _ in range(rng.randrange(3, 12))]
        out.append(base * rng.randrange(1, 3))  # some repetition gives prompt lookup something to find
    return out


@pytest.mark.parametrize("mode", list(MODES))
def test_single_requests_match_hf(mode: str, tiny_hf: LlamaForCausalLM, tiny_model: LlamaModel) -> None:
    engine = SpecEngine(
        tiny_model,
        EngineConfig(max_batch=1, max_seq_len=256, spec=MODES[mode]),
        random_runner(tiny_model, 48),
    )
    total_accepted = 0
    for i, prompt in enumerate(prompts(6, seed=1)):
        outputs, stats = run_all(engine, [greedy_request(f"r{i}", prompt, 40, stop=(2,))])
        assert outputs[f"r{i}"] == hf_greedy(tiny_hf, prompt, 40, eos=2)
        total_accepted += stats[f"r{i}"].num_accepted_tokens
    if MODES[mode].use_ngram and MODES[mode].mode != "off":
        assert total_accepted > 0, "speculation never accepted anything: the accept path went untested"


@pytest.mark.parametrize("mode", ["target_only", "hybrid_tree", "draft_chain"])
def test_concurrent_requests_match_hf(mode: str, tiny_hf: LlamaForCausalLM, tiny_model: LlamaModel) -> None:
    """More requests than slots, of different lengths, finishing at different steps."""
    engine = SpecEngine(
        tiny_model,
        EngineConfig(max_batch=3, max_seq_len=256, spec=MODES[mode]),
        random_runner(tiny_model, 48),
    )
    batch = prompts(7, seed=2)
    requests = [greedy_request(f"r{i}", p, 10 + 7 * i) for i, p in enumerate(batch)]
    outputs, _ = run_all(engine, requests)
    for i, prompt in enumerate(batch):
        assert outputs[f"r{i}"] == hf_greedy(tiny_hf, prompt, 10 + 7 * i)
        assert len(outputs[f"r{i}"]) == 10 + 7 * i


def test_abort_frees_the_slot(tiny_hf: LlamaForCausalLM, tiny_model: LlamaModel) -> None:
    engine = SpecEngine(
        tiny_model,
        EngineConfig(max_batch=2, max_seq_len=256, spec=MODES["hybrid_tree"]),
        random_runner(tiny_model, 48),
    )
    first, second, third = prompts(3, seed=3)
    engine.submit(greedy_request("a", first, 50))
    engine.submit(greedy_request("b", second, 20))
    early = [event.request_id for _ in range(2) for event in engine.step()]
    assert "a" in early
    engine.abort("a")
    outputs, _ = run_all(engine, [greedy_request("c", third, 20)])
    assert "a" not in outputs
    assert outputs["c"] == hf_greedy(tiny_hf, third, 20)


def test_smollm2_greedy_matches_hf(smol_hf: LlamaForCausalLM, smol_model: LlamaModel) -> None:
    prompt = [
        1,
        9690,
        198,
        2683,
        359,
        253,
        5356,
        5646,
        11173,
        3365,
        3511,
        308,
        34519,
        28,
        7018,
        411,
        2,
        198,
        1,
        4093,
        198,
        19556,
        260,
        1789,
        2759,
        282,
        260,
        1789,
        2759,
        30,
        2,
        198,
        1,
        520,
        9531,
        198,
    ]
    expected = hf_greedy(smol_hf, prompt, 24, eos=2)
    runner = random_runner(smol_model, 2048)
    # where the kernels serve bf16, the draft beside this float32 target proposes in bf16
    assert runner.dtype == (torch.bfloat16 if native.serves(torch.bfloat16) else torch.float32)
    engine = SpecEngine(
        smol_model, EngineConfig(max_batch=2, max_seq_len=512, spec=MODES["hybrid_tree"]), runner
    )
    outputs, _ = run_all(engine, [greedy_request("s", prompt, 24, stop=(2,))])
    assert outputs["s"] == expected


def test_draft_swap_between_steps_keeps_output(tiny_hf: LlamaForCausalLM, tiny_model: LlamaModel) -> None:
    """Hot swap mid-generation (to another draft, to none, and back): output unchanged."""
    engine = SpecEngine(
        tiny_model,
        EngineConfig(max_batch=2, max_seq_len=256, spec=MODES["hybrid_tree"]),
        random_runner(tiny_model, 48, seed=1),
    )
    first, second = prompts(2, seed=4)
    engine.submit(greedy_request("a", first, 30))
    engine.submit(greedy_request("b", second, 30))
    outputs: dict[str, list[int]] = {"a": [], "b": []}
    swaps = [random_runner(tiny_model, 32, seed=2), None, random_runner(tiny_model, 48, seed=3)]
    steps = 0
    while engine.has_work():
        for event in engine.step():
            outputs[event.request_id].extend(event.token_ids)
        steps += 1
        if swaps and steps % 2 == 0:
            engine.swap_draft(swaps.pop(0))
    assert outputs["a"] == hf_greedy(tiny_hf, first, 30)
    assert outputs["b"] == hf_greedy(tiny_hf, second, 30)


def test_finish_ends_a_sequence_with_its_statistics_and_trace(tiny_model: LlamaModel) -> None:
    """A stop string matched in the worker ends the sequence like a stop token: stats and trace kept."""
    engine = SpecEngine(
        tiny_model,
        EngineConfig(max_batch=1, max_seq_len=256, spec=MODES["hybrid_tree"]),
        random_runner(tiny_model, 48),
    )
    first, second = prompts(2, seed=4)
    engine.submit(greedy_request("running", first, 40))
    engine.submit(greedy_request("waiting", second, 40))  # one slot: this one has not started
    emitted = sum(len(event.token_ids) for _ in range(3) for event in engine.step())
    ended = engine.finish("running")
    assert ended is not None and ended.finish_reason == "stop" and ended.token_ids == []
    assert ended.stats is not None and ended.stats.num_steps == 3
    assert ended.trace is not None and len(ended.trace) == 3
    assert emitted == 1 + 3 + ended.stats.num_accepted_tokens  # prefill token + one per step + accepted
    queued = engine.finish("waiting")
    assert queued is not None and queued.stats is not None and queued.stats.num_steps == 0
    assert not engine.has_work()
    assert engine.finish("running") is None
