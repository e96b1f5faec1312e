"""The engine's compiled bf16 kernel: right products, each output row from its own input row alone."""

from __future__ import annotations

import logging

import pytest
import torch

from worker.engine import native
from worker.engine.linear import NativeWeight, linear, pack

pytestmark = pytest.mark.skipif(
    not native.supports(torch.bfloat16, 64), reason="no AVX-512 BF16 CPU or no C++ compiler here"
)


def bf16(*shape: int, seed: int) -> torch.Tensor:
    return (torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 0.05).to(torch.bfloat16)


@pytest.mark.parametrize(("out_features", "in_features"), [(576, 1536), (960, 576), (37, 64), (16, 32)])
@pytest.mark.parametrize("rows", [1, 3, 4, 17, 150])
def test_the_product_is_a_float64_product_rounded_to_bf16(
    out_features: int, in_features: int, rows: int
) -> None:
    weight, x = bf16(out_features, in_features, seed=1), bf16(rows, in_features, seed=2)
    exact = x.double() @ weight.double().T
    got = native.product(x, weight)
    assert got.dtype == torch.bfloat16 and got.shape == (rows, out_features)
    # fp32 accumulation, then one bf16 rounding: within a bf16 ulp of the exact value
    assert torch.allclose(got.double(), exact, rtol=2**-7, atol=1e-6)
    assert not torch.equal(got, torch.zeros_like(got))


@pytest.mark.parametrize("out_features", [576, 37])
def test_an_output_row_is_the_same_alone_and_among_any_number_of_rows(out_features: int) -> None:
    # SmolLM2's down projection: oneDNN rounded a lone row apart from the same row among others
    weight, x = bf16(out_features, 1536, seed=3), bf16(40, 1536, seed=4)
    alone = torch.cat([native.product(x[i : i + 1], weight) for i in range(40)])
    for start, stop in ((0, 2), (0, 4), (1, 8), (3, 20), (0, 33), (5, 40)):
        assert torch.equal(native.product(x[start:stop], weight), alone[start:stop]), (start, stop)
    batched = native.product(x[:30].view(3, 10, 1536), weight)
    assert torch.equal(batched.view(30, -1), alone[:30])


def test_bf16_weights_pack_for_the_kernel_unless_switched_off() -> None:
    weight = bf16(64, 96, seed=5)
    packed = pack(weight)
    assert isinstance(packed, NativeWeight)
    x = bf16(5, 96, seed=6)
    assert torch.equal(linear(x, packed), native.product(x, weight))
    assert not isinstance(pack(weight.float()), NativeWeight)  # fp32 stays on oneDNN
    assert not isinstance(pack(bf16(64, 80, seed=7)), NativeWeight)  # 80 inputs: not a multiple of 32
    native.enable(False)
    try:
        assert not isinstance(pack(weight), NativeWeight)
    finally:
        native.enable(True)


def test_the_build_is_cached_and_a_failing_compiler_leaves_onednn(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert list(native.cache_dir().glob("skinny-*.so"))
    monkeypatch.setenv("CXX", "false")  # a "compiler" that exits 1: a different cache key, a failed build
    with caplog.at_level(logging.WARNING, logger="worker.engine.native"):
        assert native._library() is None
    assert "build failed" in caplog.text
    monkeypatch.setenv("CXX", "no-such-compiler")
    assert native._library() is None
