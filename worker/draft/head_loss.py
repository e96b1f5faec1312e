"""The draft head's KL loss in row chunks, forward and backward by hand.

Per training row, KL(p || q) over the draft vocabulary with q = softmax(x W^T) and p the target's
top-k distribution: ``sum_k p_k (log p_k - z_{t_k}) + logsumexp(z)``; its gradient in the logits is
``softmax(z) - p`` (scattered to the top-k ids). Left to autograd, every one of those terms is a
tensor of ``[rows, vocab]`` fp32 (about 200 MB for a step's 6,000 rows x 8,192 ids) written and read
again by a dozen elementwise passes, a zero fill and a scatter: a profile of a bf16 step had them at
about 40 % of its time, the head's matmuls aside. Here each chunk of rows goes through all of it while
it sits in cache; only the logits (in the products' dtype) and each row's log-sum-exp are kept for the
backward pass, and the products stay whole (one rounding of each gradient, as autograd's).
"""

from __future__ import annotations

from typing import Any

import torch

CHUNK_ROWS = 256  # rows per pass: 256 x 8,192 fp32 logits are 8 MB


class HeadKL(torch.autograd.Function):
    """``(kl [N], argmax [N])`` of ``normed [N, H]`` through ``weight [V, H]`` against ``target_ids``
    and ``target_logp`` ``[N, k]`` (log-probabilities summing to one per row). The products run in
    ``dtype`` (bf16 under autocast, as ``F.linear`` would), everything else in fp32."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        normed: torch.Tensor,
        weight: torch.Tensor,
        target_ids: torch.Tensor,
        target_logp: torch.Tensor,
        dtype: torch.dtype,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rows = normed.shape[0]
        x, w = normed.to(dtype), weight.to(dtype)  # cast once, for both passes
        logits = torch.empty(rows, weight.shape[0], dtype=dtype, device=normed.device)
        lse = torch.empty(rows, device=normed.device)
        kl = torch.empty(rows, device=normed.device)
        argmax = torch.empty(rows, dtype=torch.long, device=normed.device)
        for start in range(0, rows, CHUNK_ROWS):
            part = slice(start, start + CHUNK_ROWS)
            z = torch.mm(x[part], w.T, out=logits[part]).float()
            lse[part] = torch.logsumexp(z, -1)
            picked = z.gather(-1, target_ids[part])
            logp = target_logp[part]
            kl[part] = (logp.exp() * (logp - picked)).sum(-1) + lse[part]
            argmax[part] = z.argmax(-1)
        ctx.save_for_backward(x, w, logits, lse, target_ids, target_logp)
        ctx.mark_non_differentiable(argmax)
        return kl, argmax

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad_kl: torch.Tensor, _grad_argmax: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, None, None, None]:
        x, w, logits, lse, target_ids, target_logp = ctx.saved_tensors
        grad_logits = torch.empty_like(logits)  # in the products' dtype, as autograd would cast it
        for start in range(0, x.shape[0], CHUNK_ROWS):
            part = slice(start, start + CHUNK_ROWS)
            g = torch.sub(logits[part], lse[part, None]).exp_()  # softmax(z), in fp32
            g.scatter_add_(-1, target_ids[part], -target_logp[part].exp())
            grad_logits[part] = g.mul_(grad_kl[part, None])
        grad_normed = torch.mm(grad_logits, w).float()
        grad_weight = torch.mm(grad_logits.T, x).float()
        return grad_normed, grad_weight, None, None, None


def head_kl(
    normed: torch.Tensor, weight: torch.Tensor, target_ids: torch.Tensor, target_logp: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row KL and the draft's argmax (see :class:`HeadKL`), the products in autocast's dtype where
    autocast is on for the inputs' device."""
    device = normed.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype
    with torch.autocast(device, enabled=False):
        kl, argmax = HeadKL.apply(normed.float(), weight, target_ids, target_logp.float(), dtype)
    return kl, argmax
