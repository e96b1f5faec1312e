"""Training-time test: unroll the draft several steps in parallel over a whole sequence, as it drafts.

At serving the draft's first step reads the target's features; each further step reads the draft's
own previous hidden state. Step ``k`` at row ``i`` consumes token ``i + 1`` and the step ``k - 1``
output of row ``i - 1``, and attends to what the serving-time draft cache would hold: step-0 rows
``0..i-k`` (the target-fed history) and the one row of each later step on its own path (EAGLE-3's
diagonal pattern). It predicts token ``i + 2`` at every step.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from worker.draft.model import Eagle3Draft
from worker.engine.llama import rotary_tables


@functools.lru_cache(maxsize=16)
def ttt_mask(length: int, step: int) -> torch.Tensor:
    """``[T, (step + 1) * T]``: which keys (step-major) row ``i`` of unroll ``step`` may attend."""
    rows = torch.arange(length).view(-1, 1)
    cols = torch.arange(length).view(1, -1)
    blocks = [cols <= rows - step] + [cols == rows - step + j for j in range(1, step + 1)]
    return torch.cat(blocks, dim=1)


@functools.lru_cache(maxsize=8)
def _rotary(head_dim: int, theta: float, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    cos, sin = rotary_tables(head_dim, theta, length)
    return cos.unsqueeze(1), sin.unsqueeze(1)


def unroll(
    draft: Eagle3Draft, embed: torch.Tensor, tokens: torch.Tensor, features: torch.Tensor, steps: int
) -> list[torch.Tensor]:
    """Draft logits ``[B, T, V_draft]`` per unroll step for ``tokens [B, T]``, ``features [B, T, 3H]``.

    Row ``T - 1`` has no next token and is padding; callers mask it (and rows ``i < k`` at step ``k``).
    """
    return [draft.logits(out) for out in unroll_hidden(draft, embed, tokens, features, steps)]


def unroll_hidden(
    draft: Eagle3Draft, embed: torch.Tensor, tokens: torch.Tensor, features: torch.Tensor, steps: int
) -> list[torch.Tensor]:
    """The draft's output hidden states ``[B, T, H]`` per unroll step, before its head: the trainer
    applies the head to the rows it trains on only (the head is most of a step's work)."""
    length = tokens.shape[1]
    config = draft.config
    next_tokens = torch.cat([tokens[:, 1:], tokens[:, -1:]], dim=1)
    token_embeds = F.embedding(next_tokens, embed)
    cos, sin = (table.to(tokens.device) for table in _rotary(config.head_dim, config.rope_theta, length))
    hidden = draft.fuse(features.float())
    keys: list[torch.Tensor] = []
    values: list[torch.Tensor] = []
    outputs = []
    for step in range(steps):
        q, k, v = draft.project_qkv(draft.layer_input(token_embeds, hidden), cos, sin)
        keys.append(k.transpose(1, 2))
        values.append(v.transpose(1, 2))
        attn = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            torch.cat(keys, dim=2),
            torch.cat(values, dim=2),
            attn_mask=ttt_mask(length, step).to(tokens.device),
            enable_gqa=True,
        )
        out = draft.after_attention(hidden, attn.transpose(1, 2).reshape(*tokens.shape, -1))
        outputs.append(out)
        hidden = F.pad(out[:, :-1], (0, 0, 1, 0))
    return outputs
