"""bfloat16 serving: the lean engine and the draft run end to end in bf16 packed weights.

The acceptance rule is the fp32 one; what bf16 changes is rounding: a verification forward over
many rows rounds differently from one-row decoding, so on real text a near-tie can flip and greedy
output drift from bf16 target-only decoding (measured by ``bench speedup --dtype bfloat16``). The
tiny model's logits are peaked, so no rounding flips a choice and outputs must be identical.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from borealis.cpu import bf16_native
from tests.engine.helpers import greedy_request, random_runner, run_all
from tests.engine.test_engine_greedy import MODES, prompts
from worker.engine.engine import EngineConfig, SpecEngine
from worker.engine.llama import LlamaModel

pytestmark = pytest.mark.skipif(not bf16_native(), reason="this CPU has no native bfloat16")


@pytest.fixture(scope="module")
def tiny_bf16(tiny_dir: Path) -> LlamaModel:
    return LlamaModel.load(tiny_dir, dtype=torch.bfloat16)


@pytest.mark.parametrize("mode", ["hybrid_tree", "draft_chain", "ngram_chain"])
def test_bf16_speculation_matches_bf16_target_only(mode: str, tiny_bf16: LlamaModel) -> None:
    requests = [greedy_request(f"r{i}", p, 24) for i, p in enumerate(prompts(6, seed=11))]
    plain = SpecEngine(tiny_bf16, EngineConfig(max_batch=3, max_seq_len=256, spec=MODES["target_only"]))
    spec = SpecEngine(
        tiny_bf16, EngineConfig(max_batch=3, max_seq_len=256, spec=MODES[mode]), random_runner(tiny_bf16, 48)
    )
    expected, _ = run_all(plain, requests)
    outputs, stats = run_all(spec, requests)
    assert outputs == expected
    assert spec.draft is None or spec.draft.dtype == torch.bfloat16  # type: ignore[attr-defined]
    assert tiny_bf16.layers[0].qkv.dtype == torch.bfloat16
    if mode != "ngram_chain":
        assert sum(s.num_drafts for s in stats.values()) > 0
