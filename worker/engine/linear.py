"""Matrix-vector products at memory speed on CPU.

Decoding a small model is bound by how fast weights stream from memory. MKL's sgemm reaches about
half the bandwidth for the skinny shapes of decoding and verification (1-16 rows); oneDNN with
weights packed once into its blocked layout reaches nearly all of it, so every projection of the
target and the draft goes through here.

oneDNN builds and caches a kernel for every distinct row count (about 0.6 MB each, in two caches of
1024 entries). Serving sees every row count from 1 to the prefill chunk (batch x tree size, prompt
tails), so those caches grew worker memory by hundreds of MB over hours. Row counts above
``EXACT_ROWS`` are therefore padded up to one of eight sizes per power of two (at most 12.5% extra
rows), which keeps the set of kernels small and fixed.

A one-row bfloat16 product over more than ``BF16_ONE_ROW_MAX_FEATURES`` inputs (SmolLM2's down
projection) is padded to two rows: oneDNN reduces such a row in another order than two or more
rows, bf16 output rounding makes that visible, and one-row decoding and multi-row verification of
the same token disagreed (see :mod:`worker.engine.llama` for attention). Up to 1024 inputs a lone
row rounds alike (measured), and padding the 49k-row head costs time, so those stay one row.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def onednn_available() -> bool:
    return bool(torch.backends.mkldnn.is_available())


def pack(weight: torch.Tensor) -> torch.Tensor:
    """Return ``weight`` ([out, in]) in the fastest layout :func:`linear` accepts on this machine.

    bfloat16 weights are packed too: on AVX512-BF16 CPUs a packed bf16 projection streams half the
    bytes and ran 2.3x (one row) to 3.7x (sixteen rows) faster than packed fp32 here.
    """
    if weight.dtype in (torch.float32, torch.bfloat16) and onednn_available():
        return torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), None)
    return weight.contiguous()


EXACT_ROWS = 16  # decoding's row counts: padding them would cost up to 2x on the hottest path
BF16_ONE_ROW_MAX_FEATURES = 1024


def padded_rows(rows: int, dtype: torch.dtype = torch.float32, features: int = 0) -> int:
    """``rows`` rounded up to a kernel size: exact up to ``EXACT_ROWS``, then 8 sizes per doubling."""
    if rows == 1 and dtype == torch.bfloat16 and features > BF16_ONE_ROW_MAX_FEATURES:
        return 2
    if rows <= EXACT_ROWS:
        return rows
    step = (1 << (rows.bit_length() - 1)) // 8
    return -(-rows // step) * step


def linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x @ weight.T`` for a weight produced by :func:`pack` (or any plain tensor)."""
    if not weight.is_mkldnn:
        return F.linear(x, weight)
    flat = x.reshape(-1, x.shape[-1])
    rows = flat.shape[0]
    padded = padded_rows(rows, flat.dtype, flat.shape[-1])
    if padded != rows:
        flat = F.pad(flat, (0, 0, 0, padded - rows))
    out = torch.ops.mkldnn._linear_pointwise(flat.contiguous(), weight, None, "none", [], "")
    return out[:rows].view(*x.shape[:-1], out.shape[-1])
