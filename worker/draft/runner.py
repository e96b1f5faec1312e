"""Serving-side draft runner: packed weights and the draft's own KV cache over the lean kernels.

Built once per draft version (packing takes a moment, so the worker builds it off the serving
thread); swapping drafts is then a reference assignment between steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from worker.draft.model import DraftConfig, Eagle3Draft
from worker.engine import native
from worker.engine.linear import linear, pack
from worker.engine.llama import (
    KVCache,
    LayerWeights,
    StepInput,
    attention_block,
    flat_cache_index,
    group_mask,
    mlp_block,
    native_layer,
    rms_norm,
    rotary_tables,
)


def served_dtype(target_dtype: torch.dtype, config: DraftConfig) -> torch.dtype:
    """bf16 for a draft beside a float32 target where the engine's kernels serve a bf16 draft: each drafting
    pass streams half the bytes (1.05x speculative tok/s with a trained code draft, 4 of 4 alternating
    rounds; docs/benchmarks.md), and the text is the target's whatever proposes it. Else the target's
    dtype."""
    if target_dtype == torch.float32 and native.serves_model(
        torch.bfloat16, config.head_dim, config.hidden_size
    ):
        return torch.bfloat16
    return target_dtype


class DraftRunner:
    """Implements :class:`worker.engine.types.Drafter` for an :class:`Eagle3Draft`."""

    def __init__(
        self,
        draft: Eagle3Draft,
        embed: torch.Tensor,
        version: str | None = None,
        max_positions: int = 8192,
        dtype: torch.dtype | None = None,
    ):
        config = draft.config
        if embed.shape != (config.target_vocab_size, config.hidden_size):
            raise ValueError("draft does not fit this target (embedding shape differs)")
        self.version = version
        self.config = config
        self.spec = config.attention_spec()
        self.embed = embed
        self.draft_to_target = draft.vocab.draft_to_target
        # the target's features and embeddings are cast to the draft's dtype as they come in
        self.dtype = dtype = dtype or served_dtype(embed.dtype, config)

        def cast(weight: torch.Tensor) -> torch.Tensor:
            return weight.detach().to(dtype, copy=True)

        with torch.no_grad():
            self.fc = pack(cast(draft.fc))
            self.layer = LayerWeights(
                input_norm=cast(draft.input_norm),
                qkv=pack(cast(draft.qkv)),
                out=pack(cast(draft.out)),
                post_norm=cast(draft.post_norm),
                gate_up=pack(cast(draft.gate_up)),
                down=pack(cast(draft.down)),
            )
            self.hidden_norm = cast(draft.hidden_norm)
            self.final_norm = cast(draft.final_norm)
            self.lm_head = pack(cast(draft.lm_head))
        cos, sin = rotary_tables(config.head_dim, config.rope_theta, max_positions)
        self.cos, self.sin = cos.to(dtype), sin.to(dtype)
        self.native_kernels = native.serves_model(dtype, config.head_dim, config.hidden_size)
        self.native_amx = self.native_kernels and native.tiles(dtype)
        # the layer in one kernel call where the kernels serve it, as the target's layers run (measured:
        # no faster than the composition here, a pass being its weights' streaming; fewer operations)
        self.native_layer = native_layer(self.layer, self.native_amx) if self.native_kernels else None

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        return KVCache(self.spec, 1, batch, max_len, self.dtype)

    @torch.inference_mode()
    def fuse(self, features: torch.Tensor) -> torch.Tensor:
        return linear(features.to(self.dtype), self.fc)

    @torch.inference_mode()
    def forward(
        self,
        step: StepInput,
        hidden: torch.Tensor,
        cache: KVCache,
        first_slot: int = 0,
        head_rows: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One draft-layer pass: next hidden states ``[B, T, H]`` and log-probs over the draft vocab
        ``[B, T, V]``; of one row per sequence alone (``head_rows[b]``, ``[B, 1, ...]``) when given."""
        h = self._layer(step, hidden, cache, first_slot)
        if head_rows is not None:
            h = h[torch.arange(h.shape[0]), head_rows].unsqueeze(1)
        normed = rms_norm(h, self.final_norm, self.config.rms_norm_eps, self.native_kernels)
        logits = linear(normed, self.lm_head)
        return h, torch.log_softmax(logits.float(), dim=-1)

    @torch.inference_mode()
    def advance(self, step: StepInput, hidden: torch.Tensor, cache: KVCache, first_slot: int = 0) -> None:
        """The same pass for its cache rows alone: catching up proposes nothing, so no head."""
        self._layer(step, hidden, cache, first_slot)

    def _layer(self, step: StepInput, hidden: torch.Tensor, cache: KVCache, first_slot: int) -> torch.Tensor:
        eps, native_kernels = self.config.rms_norm_eps, self.native_kernels
        x = torch.cat(
            [
                rms_norm(
                    F.embedding(step.tokens, self.embed).to(self.dtype),
                    self.layer.input_norm,
                    eps,
                    native_kernels,
                ),
                rms_norm(hidden, self.hidden_norm, eps, native_kernels),
            ],
            dim=-1,
        )
        cos = self.cos[step.positions].unsqueeze(2)
        sin = self.sin[step.positions].unsqueeze(2)
        flat_index = flat_cache_index(step.write_index, self.spec.num_kv_heads, cache.max_len)
        groups = self.spec.num_heads // self.spec.num_kv_heads
        mask = group_mask(step.mask, groups, self.dtype, self.native_kernels)
        slots = slice(first_slot, first_slot + step.tokens.shape[0])
        if self.native_layer is not None:  # the composition below, the same bits, in one call
            attention = (cos, sin, cache.k[0, slots], cache.v[0, slots], flat_index, mask)
            return self.native_layer(hidden, eps, attention, normed=x)
        attn = attention_block(
            x,
            self.layer,
            self.spec,
            cache.k[0, slots],
            cache.v[0, slots],
            cos,
            sin,
            flat_index,
            mask,
            native_kernels=self.native_kernels,
            native_amx=self.native_amx,
        )
        h = hidden + attn
        normed = rms_norm(h, self.layer.post_norm, eps, native_kernels)
        return h + mlp_block(normed, self.layer, native_kernels=native_kernels)
