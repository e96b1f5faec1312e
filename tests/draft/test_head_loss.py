"""The chunked head KL against autograd through the plain formula: values, argmax and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from worker.draft.head_loss import CHUNK_ROWS, head_kl


def problem(rows: int, vocab: int = 512, hidden: int = 64, k: int = 8) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(rows)
    normed = torch.randn(rows, hidden, generator=generator)
    weight = torch.randn(vocab, hidden, generator=generator) / hidden**0.5
    ids = torch.stack([torch.randperm(vocab, generator=generator)[:k] for _ in range(rows)])
    logp = torch.log_softmax(torch.randn(rows, k, generator=generator) * 2, -1)
    return normed, weight, ids, logp


def reference(
    normed: torch.Tensor, weight: torch.Tensor, ids: torch.Tensor, logp: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    logits = F.linear(normed, weight).float()
    kl = (logp.exp() * (logp - torch.log_softmax(logits, -1).gather(-1, ids))).sum(-1)
    return kl, logits.detach().argmax(-1)


@pytest.mark.parametrize("rows", [1, CHUNK_ROWS + 45])
def test_kl_argmax_and_gradients_equal_autograd_in_fp32(rows: int) -> None:
    normed, weight, ids, logp = problem(rows)
    upstream = torch.rand(rows)  # a weighted sum, so each row's gradient is scaled on its own
    grads = []
    for fn in (head_kl, reference):
        x, w = normed.clone().requires_grad_(True), weight.clone().requires_grad_(True)
        kl, argmax = fn(x, w, ids, logp)
        (kl * upstream).sum().backward()  # type: ignore[no-untyped-call]
        grads.append((kl.detach(), argmax, x.grad, w.grad))
    (kl, argmax, gx, gw), (ref_kl, ref_argmax, ref_gx, ref_gw) = grads
    torch.testing.assert_close(kl, ref_kl, rtol=1e-5, atol=1e-5)
    assert torch.equal(argmax, ref_argmax)
    torch.testing.assert_close(gx, ref_gx, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(gw, ref_gw, rtol=1e-4, atol=1e-6)


def test_under_bf16_autocast_the_products_run_in_bf16_like_f_linear() -> None:
    normed, weight, ids, logp = problem(CHUNK_ROWS + 45)
    results = []
    for fn in (head_kl, reference):
        x, w = normed.clone().requires_grad_(True), weight.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            kl, argmax = fn(x, w, ids, logp)
        kl.sum().backward()  # type: ignore[no-untyped-call]
        assert w.grad is not None and w.grad.dtype == torch.float32
        results.append((kl.detach(), argmax, x.grad, w.grad))
    (kl, argmax, gx, gw), (ref_kl, ref_argmax, ref_gx, ref_gw) = results
    torch.testing.assert_close(kl, ref_kl, rtol=1e-5, atol=1e-5)  # the same bf16 logits
    assert torch.equal(argmax, ref_argmax)
    # the same bf16 products of bf16 logit gradients rounded once, as autograd's: at most a bf16 ulp
    # apart where the fp32 softmax before the rounding differed in its last bits
    torch.testing.assert_close(gx, ref_gx, rtol=2**-7, atol=1e-6)
    torch.testing.assert_close(gw, ref_gw, rtol=2**-7, atol=1e-6)
    fp32 = problem(CHUNK_ROWS + 45)
    assert not torch.allclose(kl, reference(*fp32)[0], rtol=1e-5, atol=1e-5), "autocast made no difference"
