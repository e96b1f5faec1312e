"""Matrix-vector products at memory speed on CPU.

Decoding a small model is bound by how fast weights stream from memory. MKL's sgemm reaches about
half the bandwidth for the skinny shapes of decoding and verification (1-16 rows); oneDNN with
weights packed once into its blocked layout reaches nearly all of it, so every projection of the
target and the draft goes through here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def onednn_available() -> bool:
    return bool(torch.backends.mkldnn.is_available())


def pack(weight: torch.Tensor) -> torch.Tensor:
    """Return ``weight`` ([out, in]) in the fastest layout :func:`linear` accepts on this machine."""
    if weight.dtype == torch.float32 and onednn_available():
        return torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), None)
    return weight.contiguous()


def linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x @ weight.T`` for a weight produced by :func:`pack` (or any plain tensor)."""
    if weight.is_mkldnn:
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, None, "none", [], "")
    return F.linear(x, weight)
