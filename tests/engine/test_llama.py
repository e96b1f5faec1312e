"""The lean forward must reproduce Hugging Face's logits, including after the cache is cropped."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from transformers import LlamaForCausalLM

from worker.engine.llama import LlamaModel, StepInput, causal_step_input, real_rows


def hf_logits(hf: LlamaForCausalLM, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return hf(torch.tensor([ids])).logits[0]


def run(model: LlamaModel, step: StepInput, cache) -> torch.Tensor:  # type: ignore[no-untyped-def]
    hidden, _ = model.forward(step, cache)
    return model.logits(hidden)


def test_prefill_and_decode_match_hf(tiny_hf: LlamaForCausalLM, tiny_model: LlamaModel) -> None:
    ids = [5, 17, 3, 44, 9, 60, 21, 8, 33, 70]
    expected = hf_logits(tiny_hf, ids)
    cache = tiny_model.new_cache(1, 64)
    got = run(tiny_model, causal_step_input(torch.tensor([ids[:6]]), [0]), cache)[0]
    for i, token in enumerate(ids[6:]):
        got = torch.cat([got, run(tiny_model, causal_step_input(torch.tensor([[token]]), [6 + i]), cache)[0]])
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_features_are_layer_outputs(tiny_hf: LlamaForCausalLM, tiny_model: LlamaModel) -> None:
    ids = [4, 8, 15, 16, 23, 42]
    with torch.no_grad():
        out = tiny_hf(torch.tensor([ids]), output_hidden_states=True)
    low, mid, high = tiny_model.feature_layers
    expected = torch.cat([out.hidden_states[i + 1][0] for i in (low, mid, high)], dim=-1)
    _, features = tiny_model.forward(causal_step_input(torch.tensor([ids]), [0]), tiny_model.new_cache(1, 16))
    torch.testing.assert_close(features[0], expected, atol=1e-4, rtol=1e-4)


def test_crop_and_reextend_after_rejection(tiny_hf: LlamaForCausalLM, tiny_model: LlamaModel) -> None:
    """Write wrong tokens, move the length pointer back, extend with the right ones: logits still match."""
    ids = [7, 1, 30, 55, 12, 90, 3, 61]
    cache = tiny_model.new_cache(1, 32)
    run(tiny_model, causal_step_input(torch.tensor([ids[:4]]), [0]), cache)
    run(tiny_model, causal_step_input(torch.tensor([[80, 81, 82]]), [4]), cache)  # rejected proposals
    got = run(tiny_model, causal_step_input(torch.tensor([ids[4:]]), [4]), cache)[0]
    torch.testing.assert_close(got, hf_logits(tiny_hf, ids)[4:], atol=1e-4, rtol=1e-4)


def test_batched_sequences_of_different_lengths(tiny_hf: LlamaForCausalLM, tiny_model: LlamaModel) -> None:
    prompts = [[3, 9, 27, 81], [11, 22, 33, 44, 55, 66, 77], [5, 6]]
    cache = tiny_model.new_cache(3, 32)
    for slot, ids in enumerate(prompts):
        one = tiny_model.new_cache(1, 32)
        run(tiny_model, causal_step_input(torch.tensor([ids]), [0]), one)
        cache.k[:, slot], cache.v[:, slot] = one.k[:, 0], one.v[:, 0]
    nxt = [[12, 13], [14, 15], [16, 17]]
    got = run(tiny_model, causal_step_input(torch.tensor(nxt), [len(p) for p in prompts]), cache)
    for slot, ids in enumerate(prompts):
        expected = hf_logits(tiny_hf, ids + nxt[slot])[len(ids) :]
        torch.testing.assert_close(got[slot], expected, atol=1e-4, rtol=1e-4)


def test_tree_mask_and_compaction(tiny_hf: LlamaForCausalLM, tiny_model: LlamaModel) -> None:
    """Two branches verified in one forward; keeping one branch and compacting equals plain decoding."""
    prefix = [9, 8, 7, 6]
    # tree: root 20; children 21 (branch a) and 31 (branch b); 22 under 21; 32 under 31
    tokens = [20, 21, 31, 22, 32]
    parents = [-1, 0, 0, 1, 2]
    depth = [0, 1, 1, 2, 2]
    ancestor = torch.zeros(5, 5, dtype=torch.bool)
    for node in range(5):
        cur = node
        while cur >= 0:
            ancestor[node, cur] = True
            cur = parents[cur]
    cache = tiny_model.new_cache(1, 32)
    run(tiny_model, causal_step_input(torch.tensor([prefix]), [0]), cache)
    base = len(prefix)
    mask = torch.cat([torch.ones(5, base, dtype=torch.bool), ancestor], dim=1).unsqueeze(0)
    step = StepInput(
        tokens=torch.tensor([tokens]),
        positions=torch.tensor([[base + d for d in depth]]),
        write_index=torch.arange(base, base + 5).unsqueeze(0),
        mask=mask,
    )
    got = run(tiny_model, step, cache)[0]
    for branch in ([0, 1, 3], [0, 2, 4]):
        expected = hf_logits(tiny_hf, prefix + [tokens[i] for i in branch])[base:]
        torch.testing.assert_close(got[branch], expected, atol=1e-4, rtol=1e-4)
    cache.gather_positions(0, torch.tensor([base + 2, base + 4]), base + 1)  # keep branch b
    after = run(tiny_model, causal_step_input(torch.tensor([[50]]), [base + 3]), cache)[0]
    expected = hf_logits(tiny_hf, [*prefix, 20, 31, 32, 50])[-1:]
    torch.testing.assert_close(after, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("split", [5, 17])
def test_smollm2_matches_hf(smol_hf: LlamaForCausalLM, smol_model: LlamaModel, split: int) -> None:
    ids = [
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
        407,
        19712,
        8182,
        2,
    ]
    expected = hf_logits(smol_hf, ids)
    cache = smol_model.new_cache(1, 64)
    first = run(smol_model, causal_step_input(torch.tensor([ids[:split]]), [0]), cache)[0]
    run(smol_model, causal_step_input(torch.tensor([[5, 6, 7]]), [split]), cache)  # rejected, then cropped
    rest = run(smol_model, causal_step_input(torch.tensor([ids[split:]]), [split]), cache)[0]
    got = torch.cat([first, rest])
    torch.testing.assert_close(got, expected, atol=2e-4, rtol=1e-4)
    assert torch.equal(got.argmax(-1), expected.argmax(-1))


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="Linux /proc")
def test_loaded_model_keeps_no_mapping_of_its_weights_file(tiny_dir: Path, tmp_path: Path) -> None:
    # Views of the mapped file (embedding, norms) kept every weight's pages resident a second time.
    model_dir = shutil.copytree(tiny_dir, tmp_path / "model")
    model = LlamaModel.load(model_dir)
    assert model.embed.numel() > 0  # the model is alive while the mappings are read
    assert str(model_dir) not in Path("/proc/self/maps").read_text()


def test_llama3_rope_scaling_matches_hf(tmp_path: Path) -> None:
    """Llama-3.x checkpoints scale RoPE frequencies; positions far past the original context show it."""
    from transformers import LlamaConfig

    from tests.engine.conftest import TINY_CONFIG
    from tests.engine.helpers import greedy_request, hf_greedy, run_all
    from worker.engine.engine import EngineConfig, SpecConfig, SpecEngine

    rope = {
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 32,
    }
    torch.manual_seed(3)
    hf = LlamaForCausalLM(LlamaConfig(**{**TINY_CONFIG, "rope_parameters": rope})).eval()
    with torch.no_grad():
        hf.model.embed_tokens.weight.mul_(8.0)
    hf.save_pretrained(tmp_path)
    model = LlamaModel.load(tmp_path)
    assert model.spec.rope_llama3 is not None
    ids = [(7 * i + 3) % 96 for i in range(200)]
    cache = model.new_cache(1, 256)
    got = run(model, causal_step_input(torch.tensor([ids]), [0]), cache)[0]
    torch.testing.assert_close(got, hf_logits(hf, ids), atol=1e-4, rtol=1e-4)
    engine = SpecEngine(
        model, EngineConfig(max_batch=2, max_seq_len=256, spec=SpecConfig(mode="chain", use_draft=False))
    )
    prompt = ids[:60]
    outputs, _ = run_all(engine, [greedy_request("r", prompt, 40)])
    assert outputs["r"] == hf_greedy(hf, prompt, 40)


def test_qwen2_biased_projections_match_hf(tmp_path: Path) -> None:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from tests.engine.conftest import TINY_CONFIG
    from tests.engine.helpers import greedy_request, hf_greedy, run_all
    from worker.engine.engine import EngineConfig, SpecConfig, SpecEngine

    torch.manual_seed(4)
    config = {k: v for k, v in TINY_CONFIG.items() if k != "head_dim"}
    hf = Qwen2ForCausalLM(Qwen2Config(**config)).eval()
    with torch.no_grad():
        hf.model.embed_tokens.weight.mul_(8.0)
        for layer in hf.model.layers:  # random biases, so a dropped bias cannot pass unnoticed
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0.0, 0.5)
    hf.save_pretrained(tmp_path)
    model = LlamaModel.load(tmp_path)
    assert model.spec.qkv_bias
    ids = [(5 * i + 2) % 96 for i in range(40)]
    got = run(model, causal_step_input(torch.tensor([ids]), [0]), model.new_cache(1, 64))[0]
    torch.testing.assert_close(got, hf_logits(hf, ids), atol=1e-4, rtol=1e-4)
    engine = SpecEngine(
        model, EngineConfig(max_batch=2, max_seq_len=128, spec=SpecConfig(mode="chain", use_draft=False))
    )
    outputs, _ = run_all(engine, [greedy_request("r", ids[:20], 30)])
    assert outputs["r"] == hf_greedy(hf, ids[:20], 30)


def test_only_the_rows_asked_for_are_computed_and_they_match_the_padded_step(tiny_model: LlamaModel) -> None:
    """Trees of one batch padded to the widest: computing the real rows alone gives those rows'
    logits and features as the padded step does, and leaves the cache as real rows need it."""
    prompts = [[3, 9, 27, 81], [11, 22, 33, 44, 55, 66, 77], [5, 6]]
    sizes = [4, 1, 2]  # real tokens per sequence this step; the rest of each row of 4 is padding
    nxt = torch.tensor([[12, 13, 14, 15], [16, 0, 0, 0], [17, 18, 0, 0]])
    step = causal_step_input(nxt, [len(p) for p in prompts])
    real = real_rows(sizes, 4)
    caches, outputs = [], []
    for rows in (None, real):
        cache = tiny_model.new_cache(3, 32)
        for slot, ids in enumerate(prompts):
            tiny_model.forward(causal_step_input(torch.tensor([ids]), [0]), cache, first_slot=slot)
        hidden, features = tiny_model.forward(step, cache, rows=rows)
        caches.append(cache)
        outputs.append(
            (tiny_model.logits(hidden).view(-1, tiny_model.spec.vocab_size), features.flatten(0, 1))
        )
    (padded_logits, padded_features), (logits, features) = outputs
    assert logits.shape[0] == features.shape[0] == sum(sizes)
    torch.testing.assert_close(logits, padded_logits[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(features, padded_features[real], atol=1e-5, rtol=1e-5)
    for slot, (ids, size) in enumerate(zip(prompts, sizes, strict=True)):
        kept = len(ids) + size  # the prompt and this step's real tokens
        torch.testing.assert_close(caches[1].k[:, slot, :, :kept], caches[0].k[:, slot, :, :kept])
        torch.testing.assert_close(caches[1].v[:, slot, :, :kept], caches[0].v[:, slot, :, :kept])
