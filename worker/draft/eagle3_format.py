"""A Borealis draft as an EAGLE-3 checkpoint (``LlamaForCausalLMEagle3``), the format SGLang loads.

The draft is the same network, named the way EAGLE-3 checkpoints name it: ``fc`` fuses the three
target features; ``midlayer`` is one decoder layer whose attention reads [normed token embedding;
normed fused hidden] (``2H`` wide); ``norm`` and ``lm_head`` score the draft vocabulary. Two
conventions differ from a Borealis artifact and are converted here:

- the vocabulary travels as ``d2t`` *offsets*, target id = i + d2t[i] (plus ``t2d``, a mask over
  the target vocabulary, which EAGLE-3 tools write and SGLang ignores);
- ``eagle_config.eagle_aux_hidden_state_layer_ids`` name the target layers whose outputs are the
  features: id ``v`` is the output of layer ``v`` (HF ``hidden_states[v + 1]``), which is what the
  Borealis engine's ``feature_layers`` are. SGLang's default without this list differs, so it is
  always written.

Token embeddings are the target's: never exported. Weights are exported in the dtype asked for
(bf16 for GPU serving).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from worker.draft.model import DraftConfig, Eagle3Draft
from worker.draft.vocab import DraftVocab
from worker.engine.llama import LlamaSpec

ARCHITECTURE = "LlamaForCausalLMEagle3"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


# EAGLE-3 name -> the draft parameter that holds it whole
WHOLE = {
    "fc.weight": "fc",
    "midlayer.input_layernorm.weight": "input_norm",
    "midlayer.hidden_norm.weight": "hidden_norm",
    "midlayer.self_attn.o_proj.weight": "out",
    "midlayer.post_attention_layernorm.weight": "post_norm",
    "midlayer.mlp.down_proj.weight": "down",
    "norm.weight": "final_norm",
    "lm_head.weight": "lm_head",
}
# draft parameters stored fused here and split there: the EAGLE-3 names of their row blocks, in order
SPLIT = {
    "qkv": tuple(f"midlayer.self_attn.{p}_proj.weight" for p in "qkv"),
    "gate_up": ("midlayer.mlp.gate_proj.weight", "midlayer.mlp.up_proj.weight"),
}


def _split_rows(c: DraftConfig) -> dict[str, list[int]]:
    q_rows, kv_rows = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
    return {"qkv": [q_rows, kv_rows, kv_rows], "gate_up": [c.intermediate_size, c.intermediate_size]}


def eagle3_tensors(draft: Eagle3Draft, dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
    """The draft's weights under EAGLE-3 names (``q/k/v_proj``, ``gate/up_proj`` split), plus d2t/t2d."""
    weights = {name: getattr(draft, attr).detach() for name, attr in WHOLE.items()}
    for attr, rows in _split_rows(draft.config).items():
        weights |= dict(zip(SPLIT[attr], getattr(draft, attr).detach().split(rows), strict=True))
    tensors = {name: w.to(dtype).contiguous() for name, w in weights.items()}
    ids = draft.vocab.draft_to_target
    tensors["d2t"] = (ids - torch.arange(ids.numel())).contiguous()
    tensors["t2d"] = (draft.vocab.target_to_draft >= 0).contiguous()
    return tensors


def eagle3_config(
    draft: Eagle3Draft, target_config: dict[str, Any], feature_layers: tuple[int, ...]
) -> dict[str, Any]:
    """``config.json`` of the checkpoint: the draft's shape and RoPE, the target's context length."""
    c = draft.config
    config: dict[str, Any] = {
        "architectures": [ARCHITECTURE],
        "model_type": "llama",
        "hidden_act": "silu",
        "hidden_size": c.hidden_size,
        "target_hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads,
        "head_dim": c.head_dim,
        "num_hidden_layers": 1,
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_theta,
        "vocab_size": c.target_vocab_size,
        "draft_vocab_size": c.draft_vocab_size,
        "tie_word_embeddings": False,
        "max_position_embeddings": int(target_config.get("max_position_embeddings", 8192)),
        "eagle_config": {"eagle_aux_hidden_state_layer_ids": list(feature_layers)},
    }
    return config  # no rope_scaling: the draft was trained with plain RoPE, whatever the target uses


def export_eagle3(
    draft: Eagle3Draft, target_dir: Path, out_dir: Path, dtype: torch.dtype = torch.bfloat16
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` for the draft of the target in ``target_dir``."""
    target_config = json.loads((target_dir / "config.json").read_text())
    spec = LlamaSpec.from_config(target_config)
    if (spec.hidden_size, spec.vocab_size) != (draft.config.hidden_size, draft.config.target_vocab_size):
        raise ValueError("the draft was made for another target")
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(eagle3_tensors(draft, dtype), str(out_dir / WEIGHTS))
    config = eagle3_config(draft, target_config, spec.feature_layers())
    (out_dir / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return out_dir


def import_eagle3(directory: Path) -> Eagle3Draft:
    """An EAGLE-3 checkpoint of this shape (one mid layer, no fc bias) as a Borealis draft, fp32."""
    config = json.loads((directory / CONFIG).read_text())
    if config.get("architectures") != [ARCHITECTURE] or config.get("num_hidden_layers", 1) != 1:
        raise ValueError(f"not a one-layer {ARCHITECTURE} checkpoint")
    tensors = load_file(str(directory / WEIGHTS))
    d2t = tensors["d2t"].to(torch.long)
    draft_config = DraftConfig(
        hidden_size=config["hidden_size"],
        num_heads=config["num_attention_heads"],
        num_kv_heads=config["num_key_value_heads"],
        head_dim=config.get("head_dim", config["hidden_size"] // config["num_attention_heads"]),
        intermediate_size=config["intermediate_size"],
        draft_vocab_size=config["draft_vocab_size"],
        target_vocab_size=config["vocab_size"],
        rms_norm_eps=config["rms_norm_eps"],
        rope_theta=config.get("rope_theta", 10000.0),
    )
    vocab = DraftVocab(d2t + torch.arange(d2t.numel()), draft_config.target_vocab_size)
    draft = Eagle3Draft(draft_config, vocab)
    with torch.no_grad():
        for name, attr in WHOLE.items():
            getattr(draft, attr).copy_(tensors[name].float())
        for attr, names in SPLIT.items():
            getattr(draft, attr).copy_(torch.cat([tensors[name] for name in names]).float())
    return draft
