"""The rotary-embedding op SGLang 0.5.23 imports from vLLM on a device that is neither CUDA nor its own
CPU engine; written in plain torch so that the light CPU install needs no vLLM."""

from __future__ import annotations

import torch


def rotary_embedding(
    positions: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor,
    head_size: int,
    cos_sin_cache: torch.Tensor,
    is_neox: bool,
) -> None:
    """Rotate ``query`` and ``key`` ([tokens, heads * head_size]) in place at ``positions``."""
    cos, sin = cos_sin_cache.index_select(0, positions.flatten()).chunk(2, dim=-1)
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # [tokens, 1, rotary_dim / 2]
    rotary_dim = 2 * cos.shape[-1]
    for tensor in (query, key):
        rotated = tensor.view(positions.numel(), -1, head_size)[..., :rotary_dim]
        if is_neox:
            first, second = rotated[..., : rotary_dim // 2], rotated[..., rotary_dim // 2 :]
        else:
            first, second = rotated[..., 0::2], rotated[..., 1::2]
        out_first, out_second = first * cos - second * sin, second * cos + first * sin
        if is_neox:
            rotated.copy_(torch.cat((out_first, out_second), dim=-1))
        else:
            rotated.copy_(torch.stack((out_first, out_second), dim=-1).flatten(-2))
