"""bfloat16 and int4 serving: the lean engine and the draft run end to end in bf16 (int4 layer weights).

The acceptance rule is the fp32 one. What bf16 could change is rounding: torch's CPU kernels round
a one-row product and a few-row attention differently from many rows, so a verification forward
disagreed with one-row decoding and greedy output drifted from bf16 target-only decoding on real
text. The model pads those calls to sizes that round alike; these tests hold it to bitwise equality
on SmolLM2 for the steps batch-1 speculation takes (up to 16 tokens at short contexts) and to identical
greedy output end to end. Larger steps and longer spans still round apart (see ``attention``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.engine.helpers import greedy_request, random_runner, run_all
from tests.engine.test_engine_greedy import MODES, prompts
from worker.engine import native
from worker.engine.engine import EngineConfig, SpecEngine
from worker.engine.linear import AmxWeight, Int4Weight, NativeWeight
from worker.engine.llama import LlamaModel, causal_step_input

pytestmark = pytest.mark.skipif(
    not native.serves_low_precision(), reason="no native bfloat16 on this CPU, nor the engine's kernels"
)


@pytest.fixture(scope="module", params=["bfloat16", "int4"])
def tiny_low_precision(request: pytest.FixtureRequest, tiny_dir: Path) -> LlamaModel:
    return LlamaModel.load_named(tiny_dir, request.param)


@pytest.mark.parametrize("mode", ["hybrid_tree", "draft_chain", "ngram_chain"])
def test_speculation_matches_target_only_of_its_dtype(mode: str, tiny_low_precision: LlamaModel) -> None:
    model = tiny_low_precision
    requests = [greedy_request(f"r{i}", p, 24) for i, p in enumerate(prompts(6, seed=11))]
    plain = SpecEngine(model, EngineConfig(max_batch=3, max_seq_len=256, spec=MODES["target_only"]))
    spec = SpecEngine(
        model, EngineConfig(max_batch=3, max_seq_len=256, spec=MODES[mode]), random_runner(model, 48)
    )
    expected, _ = run_all(plain, requests)
    outputs, stats = run_all(spec, requests)
    assert outputs == expected
    assert spec.draft is None or spec.draft.dtype == torch.bfloat16  # type: ignore[attr-defined]
    weight = model.layers[0].gate_up
    dense = weight.weight if isinstance(weight, NativeWeight) else weight
    dense = dense.tiles if isinstance(dense, AmxWeight) else dense
    assert isinstance(dense, Int4Weight) or dense.dtype == torch.bfloat16
    if mode != "ngram_chain":
        assert sum(s.num_drafts for s in stats.values()) > 0


@pytest.fixture(scope="module")
def smollm2_bf16(smollm2_dir: Path) -> LlamaModel:
    return LlamaModel.load(smollm2_dir, dtype=torch.bfloat16)


def test_a_bf16_token_rounds_alike_alone_and_in_short_steps(smollm2_bf16: LlamaModel) -> None:
    generator = torch.Generator().manual_seed(0)
    prompt = torch.randint(100, 20000, (1, 45), generator=generator)
    new = torch.randint(100, 20000, (1, 12), generator=generator)

    def hidden(chunks: list[int]) -> torch.Tensor:
        cache = smollm2_bf16.new_cache(1, 128)
        smollm2_bf16.forward(causal_step_input(prompt, [0]), cache)
        out, done = [], 0
        for size in chunks:
            h, _ = smollm2_bf16.forward(causal_step_input(new[:, done : done + size], [45 + done]), cache)
            out.append(h)
            done += size
        return torch.cat(out, dim=1)

    one_by_one = hidden([1] * 12)
    for chunks in ([12], [4, 8], [3, 5, 4], [2] * 6):
        assert torch.equal(hidden(chunks), one_by_one), chunks


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["bfloat16", "int4"])
def test_speculation_on_real_text_is_target_only_decoding_of_its_dtype(dtype: str, smollm2_dir: Path) -> None:
    from transformers import AutoTokenizer

    model = LlamaModel.load_named(smollm2_dir, dtype)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    texts = [
        "def fibonacci(n):\n    ",
        "The history of the printing press begins",
        "Write a short poem about the sea.",
        "import numpy as np\n\ndef normalize(x):",
    ]
    requests = [greedy_request(f"r{i}", tokenizer(t)["input_ids"], 48) for i, t in enumerate(texts)]
    config = EngineConfig(max_batch=2, max_seq_len=256, spec=MODES["target_only"])
    plain = SpecEngine(model, config)
    spec_config = EngineConfig(max_batch=2, max_seq_len=256, spec=MODES["hybrid_tree"])
    spec = SpecEngine(model, spec_config, random_runner(model, 48))
    expected, _ = run_all(plain, requests)
    outputs, stats = run_all(spec, requests)
    assert outputs == expected
    assert sum(s.num_accepted_tokens for s in stats.values()) > 0
