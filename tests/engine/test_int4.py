"""int4 serving: the target's layer projections on 4-bit group-wise weights (the shipped Q4_1 codes).

What must hold: quantizing the prepared checkpoint gives back the GGUF's own codes, scales and
minimums (so "the shipped weights, served natively" is literal); a row's product does not depend on
how many rows share the call. Speculation against int4 target-only decoding: `test_dtype.py`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from worker.engine import native
from worker.engine.linear import (
    INT4_GROUP,
    dequantize_int4,
    int4_groups,
    linear,
    quantize_int4,
)
from worker.engine.llama import LlamaModel

pytestmark = pytest.mark.skipif(
    not native.serves_low_precision(), reason="int4 models compute in bf16: native, or the engine's kernels"
)

Q4_1_BLOCK_BYTES = 20  # fp16 scale, fp16 minimum, 16 bytes of 32 codes (low nibbles first)


def q4_1_dequantized(rows: int, columns: int, seed: int) -> torch.Tensor:
    """A weight as a Q4_1 file holds it: codes 0..15 times a scale plus a minimum, per 32 inputs.

    Every group uses codes 0 and 15 (as Q4_1's quantizer does); all values are multiples of 1/64
    below 4, exact in bf16 (scales, minimums and products), so the round trip can be asked to be exact.
    """
    generator = torch.Generator().manual_seed(seed)
    groups = rows * columns // INT4_GROUP
    codes = torch.randint(0, 16, (groups, INT4_GROUP), generator=generator)
    codes[:, 0], codes[:, 1] = 0, 15
    scale = torch.randint(1, 8, (groups, 1), generator=generator) / 64
    low = -torch.randint(0, 64, (groups, 1), generator=generator) / 64
    return (codes * scale + low).reshape(rows, columns)


def test_quantizing_q4_1_values_gives_them_back_exactly() -> None:
    weight = q4_1_dequantized(96, 128, seed=0)
    assert torch.equal(dequantize_int4(quantize_int4(weight)).float(), weight)


def test_quantizing_any_weight_errs_by_at_most_half_a_step() -> None:
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(64, 96, generator=generator)
    weight[0, :INT4_GROUP] = 0.25  # a constant group: scale 0, every code 0
    restored = dequantize_int4(quantize_int4(weight)).float()
    groups = weight.reshape(64, -1, INT4_GROUP)
    step = (groups.amax(-1, keepdim=True) - groups.amin(-1, keepdim=True)) / 15
    error = (restored.reshape(groups.shape) - groups).abs()
    assert torch.all(error <= step / 2 + groups.abs() * 2**-7 + 1e-6)  # bf16 scale and minimum
    assert torch.equal(restored[0, :INT4_GROUP], weight[0, :INT4_GROUP])


def test_an_int4_row_is_the_same_alone_and_among_other_rows() -> None:
    generator = torch.Generator().manual_seed(2)
    weight = quantize_int4(torch.randn(192, 576, generator=generator) * 0.05)
    x = torch.randn(24, 576, generator=generator).to(torch.bfloat16)
    alone = torch.cat([linear(x[i : i + 1], weight) for i in range(24)])
    for rows in (2, 3, 8, 17, 24):
        assert torch.equal(linear(x[:rows], weight), alone[:rows])
    reference = F.linear(x.float(), dequantize_int4(weight).float())
    torch.testing.assert_close(alone.float(), reference, atol=0.05, rtol=0.02)


def test_int4_needs_bfloat16_activations(tiny_dir: Path) -> None:
    with pytest.raises(ValueError, match="bfloat16"):
        LlamaModel.load(tiny_dir, torch.float32, int4=True)


def test_the_prepared_model_quantizes_to_the_shipped_q4_1_codes(smollm2_dir: Path) -> None:
    from gguf import GGUFReader
    from safetensors.torch import load_file

    from worker.model_prep import embedded_gguf_path

    reader = GGUFReader(str(embedded_gguf_path()))
    shipped = next(t for t in reader.tensors if t.name == "blk.7.ffn_down.weight")
    assert shipped.tensor_type.name == "Q4_1"
    blocks = np.asarray(shipped.data).reshape(-1, Q4_1_BLOCK_BYTES)
    scale = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
    low = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
    codes = np.concatenate([blocks[:, 4:] & 0xF, blocks[:, 4:] >> 4], axis=1)
    weight = load_file(str(smollm2_dir / "model.safetensors"))["model.layers.7.mlp.down_proj.weight"]
    ours, our_scale, our_low = int4_groups(weight)
    assert np.array_equal(ours.reshape(-1, INT4_GROUP).numpy(), codes)
    assert np.array_equal(our_scale.reshape(-1, 1).numpy(), scale)
    assert np.array_equal(our_low.reshape(-1, 1).numpy(), low)
