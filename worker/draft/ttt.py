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

# Scores of one unroll step (batch x heads x T x T) up to which its attention is written out: about 200
# MB of fp32 scores, softmax and their bf16 copies per step, kept for the backward pass. A longer batch
# (one trace of 1,400 tokens and up) takes the masked attention, whose memory grows with T alone.
WRITTEN_OUT_MAX_SCORES = 1 << 24


@functools.lru_cache(maxsize=16)
def ttt_mask(length: int, step: int) -> torch.Tensor:
    """``[T, (step + 1) * T]``: which keys (step-major) row ``i`` of unroll ``step`` may attend."""
    rows = torch.arange(length).view(-1, 1)
    cols = torch.arange(length).view(1, -1)
    blocks = [cols <= rows - step] + [cols == rows - step + j for j in range(1, step + 1)]
    return torch.cat(blocks, dim=1)


def ttt_attention(q: torch.Tensor, keys: list[torch.Tensor], values: list[torch.Tensor]) -> torch.Tensor:
    """Attention of unroll step ``k = len(keys) - 1``: ``q [B, heads, T, D]``, each step's keys and
    values ``[B, kv_heads, T, D]``; row ``i`` attends step-0 rows ``0..i-k`` and row ``i - k + j`` of
    each later step ``j``. Returns ``[B, heads, T, D]``.

    Written out where it fits :data:`WRITTEN_OUT_MAX_SCORES`, instead of one attention over all
    ``(k + 1) T`` keys under :func:`ttt_mask` (17 % of a profiled bf16 step): a later step contributes
    one key per row, a dot product, so the cost is one ``T x T`` score matrix per step rather than
    ``k + 1`` of them (at step 2, a third), and no masked block is computed at all."""
    step = len(keys) - 1
    batch, heads, length, dim = q.shape
    if batch * heads * length * length > WRITTEN_OUT_MAX_SCORES:
        mask = ttt_mask(length, step).to(q.device)
        return F.scaled_dot_product_attention(
            q, torch.cat(keys, dim=2), torch.cat(values, dim=2), attn_mask=mask, enable_gqa=True
        )
    kv_heads = keys[0].shape[1]
    grouped = q.reshape(batch, kv_heads, heads // kv_heads, length, dim)  # query heads sharing a KV head
    scale = dim**-0.5
    history = grouped @ keys[0].unsqueeze(2).transpose(-1, -2) * scale  # [B, kv, groups, T, T]
    history = history.masked_fill(~ttt_mask(length, step)[:, :length].to(q.device), float("-inf"))

    def lagged(rows: torch.Tensor, lag: int) -> torch.Tensor:
        """``rows`` moved down ``lag`` rows (zeros above), beside the query heads' group axis."""
        return F.pad(rows[:, :, : length - lag], (0, 0, lag, 0)).unsqueeze(2)

    own, own_values = [], []
    for j in range(1, step + 1):
        lag = step - j  # row i reads row i - lag of step j: rows before ``lag`` have none
        score = (grouped * lagged(keys[j], lag)).sum(-1, keepdim=True) * scale  # [B, kv, groups, T, 1]
        if lag:
            score = score.masked_fill(torch.arange(length, device=q.device).view(-1, 1) < lag, float("-inf"))
        own.append(score)
        own_values.append(lagged(values[j], lag))
    weights = torch.softmax(torch.cat([history, *own], dim=-1).float(), dim=-1).to(q.dtype)
    out = weights[..., :length] @ values[0].unsqueeze(2)
    for j, value in enumerate(own_values):
        out = out + weights[..., length + j : length + j + 1] * value
    return out.reshape(batch, heads, length, dim)


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
    for _ in range(steps):
        q, k, v = draft.project_qkv(draft.layer_input(token_embeds, hidden), cos, sin)
        keys.append(k.transpose(1, 2))
        values.append(v.transpose(1, 2))
        attn = ttt_attention(q.transpose(1, 2), keys, values)
        out = draft.after_attention(hidden, attn.transpose(1, 2).reshape(*tokens.shape, -1))
        outputs.append(out)
        hidden = F.pad(out[:, :-1], (0, 0, 1, 0))
    return outputs
