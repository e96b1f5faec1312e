"""The EAGLE-3 export is the same network: an independent EAGLE-3 forward over the exported names
gives the draft's own logits, the vocabulary travels as offsets, and import inverts export."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from worker.draft.eagle3_format import export_eagle3, import_eagle3
from worker.draft.model import new_draft
from worker.draft.ttt import unroll
from worker.draft.vocab import DraftVocab
from worker.engine.llama import LlamaModel

MIDLAYER = {
    "midlayer.input_layernorm.weight",
    "midlayer.hidden_norm.weight",
    "midlayer.post_attention_layernorm.weight",
    *(f"midlayer.self_attn.{p}_proj.weight" for p in "qkvo"),
    *(f"midlayer.mlp.{p}_proj.weight" for p in ("gate", "up", "down")),
}


def rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """HF Llama rotary on ``[T, heads, D]`` (rotate_half), positions 0..T-1."""
    length, dim = x.shape[0], x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, dim, 2).float() / dim)
    angles = torch.outer(torch.arange(length).float(), inv)
    cos, sin = torch.cat([angles, angles], -1).cos()[:, None], torch.cat([angles, angles], -1).sin()[:, None]
    rotated = torch.cat([-x[..., dim // 2 :], x[..., : dim // 2]], -1)
    return x * cos + rotated * sin


def eagle3_logits(
    w: dict[str, torch.Tensor],
    config: dict,
    embed: torch.Tensor,
    tokens: torch.Tensor,
    features: torch.Tensor,
) -> torch.Tensor:
    """Target-vocabulary logits of one EAGLE-3 draft step at every position, from the checkpoint alone."""
    eps, heads, kv, dim = (
        config[k] for k in ("rms_norm_eps", "num_attention_heads", "num_key_value_heads", "head_dim")
    )
    w = {k: v.float() for k, v in w.items()}
    hidden = features @ w["fc.weight"].T
    nxt = torch.cat([tokens[1:], tokens[-1:]])
    x = torch.cat(
        [
            rms(embed[nxt], w["midlayer.input_layernorm.weight"], eps),
            rms(hidden, w["midlayer.hidden_norm.weight"], eps),
        ],
        -1,
    )
    a = "midlayer.self_attn."
    q = rope((x @ w[f"{a}q_proj.weight"].T).view(-1, heads, dim), config["rope_theta"])
    k = rope((x @ w[f"{a}k_proj.weight"].T).view(-1, kv, dim), config["rope_theta"])
    v = (x @ w[f"{a}v_proj.weight"].T).view(-1, kv, dim)
    k, v = k.repeat_interleave(heads // kv, 1), v.repeat_interleave(heads // kv, 1)
    scores = torch.einsum("qhd,khd->hqk", q, k) / dim**0.5
    scores = scores.masked_fill(torch.ones_like(scores[0], dtype=torch.bool).triu(1), float("-inf"))
    attn = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).reshape(len(tokens), -1)
    h = attn @ w[f"{a}o_proj.weight"].T + hidden
    m = rms(h, w["midlayer.post_attention_layernorm.weight"], eps)
    mlp = "midlayer.mlp."
    out = (F.silu(m @ w[f"{mlp}gate_proj.weight"].T) * (m @ w[f"{mlp}up_proj.weight"].T)) @ w[
        f"{mlp}down_proj.weight"
    ].T + h
    draft_logits = rms(out, w["norm.weight"], eps) @ w["lm_head.weight"].T
    full = torch.full((len(tokens), config["vocab_size"]), float("-inf"))
    full[:, torch.arange(len(w["d2t"])) + w["d2t"].long()] = draft_logits
    return full


def test_the_exported_checkpoint_computes_the_drafts_own_logits(tiny_model_dir: Path, tmp_path: Path) -> None:
    target = LlamaModel.load(tiny_model_dir)
    spec = target.spec
    counts = Counter({t: (t * 7919) % 1000 for t in range(spec.vocab_size)})
    draft = new_draft(spec, DraftVocab.from_counts(counts, 300, spec.vocab_size), seed=3)
    with torch.no_grad():  # non-trivial norms, so a swapped norm would show
        for norm in (draft.input_norm, draft.hidden_norm, draft.post_norm, draft.final_norm):
            norm.uniform_(0.5, 1.5)
    out = export_eagle3(draft, tiny_model_dir, tmp_path / "eagle3", dtype=torch.float32)
    config = json.loads((out / "config.json").read_text())
    weights = load_file(str(out / "model.safetensors"))
    assert config["architectures"] == ["LlamaForCausalLMEagle3"] and config["draft_vocab_size"] == 300
    assert config["eagle_config"]["eagle_aux_hidden_state_layer_ids"] == list(spec.feature_layers())
    assert set(weights) == {"fc.weight", "norm.weight", "lm_head.weight", "d2t", "t2d", *MIDLAYER}
    assert not any("embed" in name for name in weights)  # embeddings always come from the target
    ids = draft.vocab.draft_to_target
    assert torch.equal(torch.arange(300) + weights["d2t"], ids) and int(weights["t2d"].sum()) == 300

    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, spec.vocab_size, (20,), generator=generator)
    features = torch.randn(20, 3 * spec.hidden_size, generator=generator)
    ours = unroll(draft, target.embed.float(), tokens[None], features[None], 1)[0][0]
    theirs = eagle3_logits(weights, config, target.embed.float(), tokens, features)
    torch.testing.assert_close(theirs[:, ids], ours, atol=1e-4, rtol=1e-4)

    back = import_eagle3(out)
    assert back.vocab.same_as(draft.vocab) and back.config == draft.config
    for a, b in zip(back.parameters(), draft.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_bf16_export_halves_the_bytes(tiny_model_dir: Path, tmp_path: Path) -> None:
    target = LlamaModel.load(tiny_model_dir)
    draft = new_draft(target.spec, DraftVocab.from_counts(Counter(), 200, target.spec.vocab_size))
    weights = load_file(str(export_eagle3(draft, tiny_model_dir, tmp_path / "bf16") / "model.safetensors"))
    assert weights["fc.weight"].dtype == torch.bfloat16 and weights["d2t"].dtype == torch.int64


def test_the_cli_exports_a_stored_draft(tiny_model_dir: Path, tmp_path: Path) -> None:
    import subprocess

    from borealis.processes import cli_argv
    from worker.draft.io import save_draft

    target = LlamaModel.load(tiny_model_dir)
    draft = new_draft(target.spec, DraftVocab.from_counts(Counter(), 200, target.spec.vocab_size), seed=5)
    save_draft(draft, tmp_path / "artifact")
    command = cli_argv("draft", "export", str(tmp_path / "artifact"), "--out", str(tmp_path / "out"))
    command += ["--target", str(tiny_model_dir), "--dtype", "float32"]
    subprocess.run(command, check=True, capture_output=True)
    back = import_eagle3(tmp_path / "out")
    assert all(torch.equal(a, b) for a, b in zip(back.parameters(), draft.parameters(), strict=True))
    refused = subprocess.run(
        cli_argv("draft", "export", str(tmp_path), "--out", str(tmp_path / "x")), capture_output=True
    )
    assert refused.returncode == 1 and b"error" in refused.stderr


def test_export_then_import_round_trips_byte_for_byte(tiny_model_dir: Path, tmp_path: Path) -> None:
    """``draft export`` then ``draft import`` gives back the same weights; exporting that again gives
    the same checkpoint file, byte for byte (fp32, the draft's own dtype)."""
    import subprocess

    from borealis.processes import cli_argv
    from worker.draft.io import load_draft, save_draft

    target = LlamaModel.load(tiny_model_dir)
    draft = new_draft(
        target.spec, DraftVocab.from_counts(Counter(range(300)), 200, target.spec.vocab_size), seed=7
    )
    save_draft(draft, tmp_path / "artifact")

    def cli(*args: str) -> None:
        subprocess.run(cli_argv("draft", *args), check=True, capture_output=True)

    cli(
        "export",
        str(tmp_path / "artifact"),
        "--out",
        str(tmp_path / "one"),
        "--target",
        str(tiny_model_dir),
        "--dtype",
        "float32",
    )
    cli("import", str(tmp_path / "one"), "--out", str(tmp_path / "back"))
    back, _ = load_draft(tmp_path / "back")
    assert back.vocab.same_as(draft.vocab)
    assert all(torch.equal(a, b) for a, b in zip(back.parameters(), draft.parameters(), strict=True))
    cli(
        "export",
        str(tmp_path / "back"),
        "--out",
        str(tmp_path / "two"),
        "--target",
        str(tiny_model_dir),
        "--dtype",
        "float32",
    )
    for name in ("model.safetensors", "config.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
