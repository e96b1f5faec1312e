"""Draft artifacts round-trip exactly, refuse tampering, and map the pruned vocabulary correctly."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from worker.draft.io import DraftArtifactError, load_draft, save_draft
from worker.draft.model import DraftConfig, Eagle3Draft, new_draft
from worker.draft.runner import DraftRunner
from worker.draft.vocab import DraftVocab
from worker.engine import native
from worker.engine.linear import TILES_FORM, VECTOR_FORM
from worker.engine.llama import LlamaSpec, StepInput, causal_step_input, rotary_tables
from worker.engine.proposals import DraftBatch, catch_up_input, draft_paths

SPEC = LlamaSpec(
    vocab_size=50,
    hidden_size=32,
    intermediate_size=48,
    num_layers=4,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    rms_norm_eps=1e-6,
    rope_theta=10000.0,
    tie_word_embeddings=True,
)


def small_draft(seed: int = 0) -> Eagle3Draft:
    vocab = DraftVocab.from_counts(Counter({7: 9, 3: 5, 40: 5, 11: 1}), 6, SPEC.vocab_size)
    return new_draft(SPEC, vocab, seed)


def test_vocab_keeps_most_frequent_and_maps_both_ways() -> None:
    vocab = DraftVocab.from_counts(Counter({7: 9, 3: 5, 40: 5, 11: 1}), 3, 50)
    assert vocab.draft_to_target.tolist() == [3, 7, 40]
    assert vocab.target_to_draft[torch.tensor([3, 7, 40, 11])].tolist() == [0, 1, 2, -1]
    assert vocab.coverage([3, 7, 11, 11]) == 0.5
    padded = DraftVocab.from_counts(Counter({49: 1}), 3, 50)
    assert padded.draft_to_target.tolist() == [0, 1, 49]
    with pytest.raises(ValueError):
        DraftVocab(torch.tensor([1, 1]), 50)
    assert vocab.same_as(DraftVocab(torch.tensor([3, 7, 40]), 50))
    assert not vocab.same_as(padded) and not vocab.same_as(DraftVocab(torch.tensor([3, 7, 40]), 60))


def test_vocab_from_outputs_weighs_every_domain_equally() -> None:
    """A rare domain's tokens make it in; a busy domain's many repeats do not crowd them out."""
    busy = [[1, 2, 3] * 50] * 20  # 3000 tokens over three ids
    rare = [[7, 8]]  # two tokens, one trace
    vocab = DraftVocab.from_outputs([*(("chat", o) for o in busy), ("code", rare[0])], 5, 100)
    assert set(vocab.draft_to_target.tolist()) >= {1, 2, 3, 7, 8}
    pooled = DraftVocab.from_counts(Counter([1, 2, 3] * 1000 + [4, 5, 6] * 3 + [7, 8]), 5, 100)
    assert not {7, 8} <= set(pooled.draft_to_target.tolist())  # raw counts would have dropped them
    assert vocab.coverage([7, 8, 9, 9]) == 0.5


def test_vocab_rows_the_outputs_leave_go_to_the_prompts_most_frequent_ids() -> None:
    """Every output id outranks every prompt id; the prompts' ids then rank by count; padding comes last."""
    outputs = [("code", [90, 91])]
    prompts = [[50, 50, 50, 60, 60, 70, 90], [50, 60, 80]]
    vocab = DraftVocab.from_outputs(outputs, 4, 100, context=prompts)
    assert vocab.draft_to_target.tolist() == [50, 60, 90, 91]
    padded = DraftVocab.from_outputs(outputs, 8, 100, context=prompts)
    assert padded.draft_to_target.tolist() == [0, 1, 50, 60, 70, 80, 90, 91]  # ties by lowest id, then 0, 1


def test_save_load_round_trip(tmp_path: Path) -> None:
    draft = small_draft(seed=3)
    manifest = save_draft(draft, tmp_path, version="v2", parent_version="v1", extra={"workload": "code"})
    loaded, read = load_draft(tmp_path)
    assert read.sha256 == manifest.sha256 and read.parent_version == "v1" and read.version == "v2"
    assert read.extra == {"workload": "code"}
    assert torch.equal(loaded.vocab.draft_to_target, draft.vocab.draft_to_target)
    for (name, a), (_, b) in zip(draft.named_parameters(), loaded.named_parameters(), strict=True):
        assert torch.equal(a, b), name
    document = json.loads((tmp_path / "manifest.json").read_text())
    assert document["architecture"] == "eagle3-llama-1layer" and document["vocab"]["draft_vocab_size"] == 6


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="Linux /proc")
def test_loaded_draft_keeps_no_mapping_of_its_file(tmp_path: Path) -> None:
    # A swap would otherwise hold each draft's file resident beside the loaded weights.
    save_draft(small_draft(), tmp_path)
    draft, _ = load_draft(tmp_path)
    assert draft.vocab.size > 0
    assert str(tmp_path) not in Path("/proc/self/maps").read_text()


def test_tampered_weights_are_refused(tmp_path: Path) -> None:
    save_draft(small_draft(), tmp_path)
    weights = tmp_path / "draft.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(DraftArtifactError):
        load_draft(tmp_path)


def test_runner_matches_module_reference() -> None:
    """The serving kernels (packed weights, KV cache) compute what the training module computes."""
    draft = small_draft(seed=5)
    embed = torch.randn(SPEC.vocab_size, SPEC.hidden_size)
    features = torch.randn(1, 6, 3 * SPEC.hidden_size)
    tokens = torch.tensor([[3, 7, 40, 1, 2, 9]])
    cos, sin = rotary_tables(SPEC.head_dim, SPEC.rope_theta, 16)
    with torch.no_grad():
        hidden = draft.fuse(features)
        x = draft.layer_input(embed[tokens], hidden)
        q, k, v = draft.project_qkv(x, cos[:6].unsqueeze(1), sin[:6].unsqueeze(1))
        attn = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, enable_gqa=True
        )
        reference = draft.logits(draft.after_attention(hidden, attn.transpose(1, 2).reshape(1, 6, -1)))
    runner = DraftRunner(draft, embed, max_positions=16)
    cache = runner.new_cache(1, 16)
    first, logp_a = runner.forward(causal_step_input(tokens[:, :4], [0]), runner.fuse(features[:, :4]), cache)
    _, logp_b = runner.forward(causal_step_input(tokens[:, 4:], [4]), runner.fuse(features[:, 4:]), cache)
    torch.testing.assert_close(
        torch.cat([logp_a, logp_b], 1), torch.log_softmax(reference, -1), atol=1e-4, rtol=1e-4
    )
    assert first.shape == (1, 4, SPEC.hidden_size)


NEEDS_AMX = pytest.mark.skipif(not native.amx(), reason="no AMX tiles on this CPU (or not allowed here)")


@pytest.mark.skipif(not native.serves(torch.bfloat16), reason="no AVX-512 BF16 CPU or no C++ compiler here")
@pytest.mark.parametrize("amx", [False, pytest.param(True, marks=NEEDS_AMX)])
def test_a_bf16_draft_layer_in_one_kernel_call_is_the_same_bits_as_its_composition(amx: bool) -> None:
    """Where the kernels serve the draft, its pass is one ``decoder_layer`` call (the attention reading
    the normed embedding beside the normed hidden state): the same cache rows, hidden states and
    log-probs as the layer op by op, over a prompt and a tree step."""
    spec = replace(SPEC, vocab_size=300, hidden_size=128, intermediate_size=256, head_dim=32)
    vocab = DraftVocab.from_counts(Counter({t: 300 - t for t in range(0, 300, 3)}), 64, spec.vocab_size)
    generator = torch.Generator().manual_seed(6)
    embed = torch.randn(spec.vocab_size, spec.hidden_size, generator=generator).to(torch.bfloat16)
    with native.switched(True, amx=amx):
        runner = DraftRunner(new_draft(spec, vocab, seed=7), embed, max_positions=32)
    fused = runner.native_layer
    assert fused is not None and fused.amx == amx
    assert fused.form == (TILES_FORM if amx else VECTOR_FORM)
    tokens = torch.randint(0, spec.vocab_size, (2, 9), generator=generator)
    features = torch.randn(2, 9, 3 * spec.hidden_size, generator=generator).to(torch.bfloat16)
    tree = StepInput(
        tokens=tokens[:, 6:],
        positions=torch.tensor([[6, 7, 7]] * 2),
        write_index=torch.tensor([[6, 7, 8]] * 2),
        mask=torch.tensor([[1] * 7 + [0, 0], [1] * 8 + [0], [1] * 7 + [0, 1]], dtype=torch.bool)
        .unsqueeze(0)
        .expand(2, 3, 9),
    )
    results = []
    for layer in (fused, None):
        runner.native_layer = layer
        cache = runner.new_cache(2, 32)
        prompt = runner.forward(causal_step_input(tokens[:, :6], [0, 0]), runner.fuse(features[:, :6]), cache)
        step = runner.forward(tree, runner.fuse(features[:, 6:]), cache)
        results.append([*prompt, *step, cache.k[0, :, :, :9], cache.v[0, :, :, :9]])
    for got, expected in zip(*results, strict=True):
        assert torch.equal(got, expected)


def test_batched_catch_up_writes_the_cache_rows_one_sequence_at_a_time_would() -> None:
    """The engine's one batched catch-up pass (ragged counts, padding rows) equals per-sequence passes
    on every row a later pass reads: the committed rows below each sequence's pending row."""
    runner = DraftRunner(
        small_draft(seed=3), torch.randn(SPEC.vocab_size, SPEC.hidden_size), max_positions=32
    )
    tokens = [torch.randint(0, SPEC.vocab_size, (20,)).tolist() for _ in range(3)]
    features = torch.randn(3, 20, 3 * SPEC.hidden_size)
    starts, counts = [4, 9, 6], [5, 0, 2]
    alone, batched = runner.new_cache(3, 32), runner.new_cache(3, 32)
    for slot, start in enumerate(starts):  # both caches hold the same history before the catch-up
        ids = torch.tensor([tokens[slot][1 : start + 1]])
        for cache in (alone, batched):
            runner.advance(
                causal_step_input(ids, [0]), runner.fuse(features[slot : slot + 1, :start]), cache, slot
            )
    for slot, (start, count) in enumerate(zip(starts, counts, strict=True)):
        if count:
            ids = torch.tensor([tokens[slot][start + 1 : start + 1 + count]])
            hidden = runner.fuse(features[slot : slot + 1, start : start + count])
            runner.advance(causal_step_input(ids, [start]), hidden, alone, slot)
    step = catch_up_input(tokens, starts, counts)
    assert step.tokens.shape == (3, 5)
    runner.advance(step, runner.fuse(features[torch.arange(3).unsqueeze(1), step.positions]), batched)
    for slot, (start, count) in enumerate(zip(starts, counts, strict=True)):
        rows = slice(0, start + count)
        torch.testing.assert_close(
            batched.k[0, slot, :, rows], alone.k[0, slot, :, rows], atol=1e-5, rtol=1e-5
        )
        torch.testing.assert_close(
            batched.v[0, slot, :, rows], alone.v[0, slot, :, rows], atol=1e-5, rtol=1e-5
        )
        assert step.write_index[slot].tolist() == [start + min(j, count) for j in range(5)]


def test_config_mismatch_is_refused() -> None:
    vocab = DraftVocab(torch.arange(4), 50)
    with pytest.raises(ValueError):
        Eagle3Draft(DraftConfig.for_target(SPEC, 6), vocab)


def test_the_first_draft_pass_catches_up_as_a_pass_of_its_own_would() -> None:
    """The engine hands :func:`draft_paths` each sequence's committed positions its draft cache lacks
    (ragged, one sequence none) to run in its first pass: the proposals and the cache rows they leave
    equal catching up in a pass of its own first, then proposing from the root alone."""
    runner = DraftRunner(
        small_draft(seed=5), torch.randn(SPEC.vocab_size, SPEC.hidden_size), max_positions=48
    )
    tokens = [torch.randint(0, SPEC.vocab_size, (length,)).tolist() for length in (15, 12)]
    kv_lens = [len(seq) - 1 for seq in tokens]  # the last token of each is its root
    draft_lens = [kv_lens[0] - 5, kv_lens[1] - 1]
    features = torch.randn(2, 16, 3 * SPEC.hidden_size)
    merged, separate = runner.new_cache(2, 48), runner.new_cache(2, 48)
    for slot, drafted in enumerate(draft_lens):  # both caches hold the same history
        ids = torch.tensor([tokens[slot][1 : drafted + 1]])
        for cache in (merged, separate):
            runner.advance(
                causal_step_input(ids, [0]), runner.fuse(features[slot : slot + 1, :drafted]), cache, slot
            )
    ids = torch.tensor([tokens[0][draft_lens[0] + 1 : kv_lens[0]]])
    hidden = runner.fuse(features[:1, draft_lens[0] : kv_lens[0] - 1])
    runner.advance(causal_step_input(ids, [draft_lens[0]]), hidden, separate, 0)
    behind = DraftBatch(tokens=tokens, kv_lens=kv_lens, draft_lens=draft_lens, features=features)
    caught_up = replace(behind, draft_lens=[kv - 1 for kv in kv_lens])
    proposed = draft_paths(runner, merged, behind, depth=3, topk=3, width=2)
    expected = draft_paths(runner, separate, caught_up, depth=3, topk=3, width=2)
    for ours, theirs in zip(proposed, expected, strict=True):
        assert [p.tokens for p in ours.paths] == [p.tokens for p in theirs.paths]
        for a, b in zip(ours.paths, theirs.paths, strict=True):
            torch.testing.assert_close(a.probs, b.probs, atol=1e-5, rtol=1e-5)
    for slot, kv_len in enumerate(kv_lens):  # the committed rows every later pass reads
        rows = slice(0, kv_len)
        torch.testing.assert_close(
            merged.k[0, slot, :, rows], separate.k[0, slot, :, rows], atol=1e-5, rtol=1e-5
        )
        torch.testing.assert_close(
            merged.v[0, slot, :, rows], separate.v[0, slot, :, rows], atol=1e-5, rtol=1e-5
        )


def test_chains_of_a_ragged_batch_are_each_sequence_drafted_alone() -> None:
    """A chain's mask is the prefix up to its own row (each sequence's own length): the batch's chains
    equal each sequence's drafted alone (which ``test_unroll_matches_serving_chain`` checks against
    the training unroll), for both a chain and the rows past a tree's first level."""
    runner = DraftRunner(
        small_draft(seed=3), torch.randn(SPEC.vocab_size, SPEC.hidden_size), max_positions=48
    )
    tokens = [torch.randint(0, SPEC.vocab_size, (length,)).tolist() for length in (17, 11)]
    kv_lens = [len(seq) - 1 for seq in tokens]
    features = torch.randn(2, 18, 3 * SPEC.hidden_size)
    batch = DraftBatch(tokens=tokens, kv_lens=kv_lens, draft_lens=[0, 0], features=features)
    for topk, width in ((1, 1), (2, 2)):
        together = draft_paths(runner, runner.new_cache(2, 48), batch, depth=4, topk=topk, width=width)
        for slot in range(2):
            alone_batch = DraftBatch([tokens[slot]], [kv_lens[slot]], [0], features[slot : slot + 1])
            (alone,) = draft_paths(runner, runner.new_cache(1, 48), alone_batch, 4, topk, width)
            assert [p.tokens for p in together[slot].paths] == [p.tokens for p in alone.paths]
            for a, b in zip(together[slot].paths, alone.paths, strict=True):
                torch.testing.assert_close(a.probs, b.probs, atol=1e-5, rtol=1e-5)
