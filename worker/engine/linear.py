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
On CPUs with AMX (Intel Sapphire Rapids and later) oneDNN multiplies bf16 products of more than
``BF16_MAX_ROWS`` rows in AMX tiles, which round apart from the vector kernel that smaller products
use (measured on such a Xeon: every row count from 33 up differed from the same rows in a two-row
product; for the down projection they differed among themselves too), so bf16 products are split
into calls of at most that many rows. That costs AMX's speed on long prefills (a 150-row prefill's
projections 29 -> 53 ms there) and on verification steps past 32 rows.

Where :mod:`worker.engine.native` has built its kernels (AVX-512 BF16 or AVX2, a C++ compiler),
bfloat16 and float32 weights go there instead, as :class:`NativeWeight` (bf16 ones in AMX tiles where
the CPU has them, :class:`AmxWeight`: up to 16 rows cost about what one does): each output row
depends on its own input row alone, so none of the rounding rules below are needed for them, and
one-row steps stream the weights faster than oneDNN does (fp32: 1.7x).

:class:`Int4Weight` serves 4-bit group-wise weights (the layout of the shipped GGUF's Q4_1 blocks)
through torch's CPU int4 kernel: a quarter of bf16's bytes per decoding step. That kernel computes
each output row alone (measured: a row's result does not depend on how many rows share the call), so
it needs no padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from worker.engine import native

INT4_GROUP = 32  # inputs per scale and minimum: Q4_1's block
INT4_LEVELS = 15  # codes 0..15
INT4_OFFSET = 8  # torch's kernel reads a code q as (q - 8) * scale + zero


@dataclass(frozen=True)
class Q4Codes:
    """The same codes in Q4_1's own block layout for :func:`worker.engine.native.product_q4`."""

    codes: torch.Tensor  # [out, in / 2] uint8: per group, code i in byte i's low nibble, code i + 16 high
    scales: torch.Tensor  # [out, in / 32] float16
    mins: torch.Tensor  # [out, in / 32] float16


@dataclass(frozen=True)
class Int4Weight:
    """An ``[out, in]`` weight as 4-bit codes with a bf16 scale and minimum per group of 32 inputs."""

    packed: torch.Tensor  # torch's CPU int4 layout of the codes
    scales_and_zeros: torch.Tensor  # [in / 32, out, 2] bf16: scale, and the value of code 8
    out_features: int
    prefill: Q4Codes | None = None  # where the native kernel is built: prompts' prefill runs there


@dataclass(frozen=True)
class NativeWeight:
    """A contiguous ``[out, in]`` bf16 or fp32 weight for :func:`worker.engine.native.product`."""

    weight: torch.Tensor


@dataclass(frozen=True)
class AmxWeight:
    """An ``[out, in]`` bf16 weight in AMX tiles for :func:`worker.engine.native.product_amx`."""

    tiles: torch.Tensor  # [ceil(out / 16), in / 32, 16 input pairs, 16 weight rows, 2]
    out_features: int


# what :func:`pack` and :func:`quantize_int4` return
Weight = torch.Tensor | Int4Weight | NativeWeight | AmxWeight


# how the native layer holds a weight (``kVectorForm`` ... in worker/engine/kernels/layer.h)
VECTOR_FORM, TILES_FORM, INT4_FORM = 0, 1, 2


def native_operand(weight: Weight) -> tuple[tuple[torch.Tensor, ...], int, int] | None:
    """A weight as the native layer takes it (its tensors, output width, form), if it does."""
    if isinstance(weight, AmxWeight):
        return (weight.tiles,), weight.out_features, TILES_FORM
    if isinstance(weight, NativeWeight):
        return (weight.weight,), weight.weight.shape[0], VECTOR_FORM
    if isinstance(weight, Int4Weight):
        return (weight.packed, weight.scales_and_zeros), weight.out_features, INT4_FORM
    return None


AMX_ROWS, AMX_INPUTS = 16, 32  # weight rows and inputs per AMX tile


def amx_tiles(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` [out, in] as the kernel's tiles: per 16 weight rows and 32 inputs, 1 KB whose row p
    holds inputs 2p and 2p + 1 of each weight row, interleaved (the tile instruction's pair layout)."""
    out_features, in_features = weight.shape
    padded = F.pad(weight, (0, 0, 0, -out_features % AMX_ROWS))
    blocks = padded.view(-1, AMX_ROWS, in_features // AMX_INPUTS, AMX_INPUTS // 2, 2)
    return blocks.permute(0, 2, 3, 1, 4).contiguous()


def int4_supported(weight: torch.Tensor) -> bool:
    return weight.dim() == 2 and weight.shape[1] % INT4_GROUP == 0


def int4_groups(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q4_1's rule per group of 32 inputs: codes round((w - min) / scale), scale (max - min) / 15.

    Returns codes ``[out, in / 32, 32]`` and fp32 scale and minimum ``[out, in / 32, 1]``. On
    weights dequantized from a Q4_1 file these are the file's own codes, scales and minimums (its
    quantizer gave each group's minimum code 0 and its maximum code 15).
    """
    out_features, in_features = weight.shape
    groups = weight.detach().float().reshape(out_features, in_features // INT4_GROUP, INT4_GROUP)
    low = groups.amin(dim=-1, keepdim=True)
    scale = (groups.amax(dim=-1, keepdim=True) - low) / INT4_LEVELS
    codes = torch.round((groups - low) / torch.where(scale > 0, scale, 1.0)).clamp(0, INT4_LEVELS)
    return codes.to(torch.int32), scale, low


def quantize_int4(weight: torch.Tensor) -> Int4Weight:
    """:func:`int4_groups` packed for the kernel, scale and minimum rounded to bf16 (what it takes);
    and, where the native kernel serves bf16, in Q4_1's layout with fp16 scales and minimums too."""
    codes, scale, low = int4_groups(weight)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.reshape(weight.shape), 1)
    zero = low + INT4_OFFSET * scale
    scales_and_zeros = torch.cat([scale, zero], dim=-1).transpose(0, 1).to(torch.bfloat16).contiguous()
    prefill = None
    if native.supports(torch.bfloat16, weight.shape[1]):
        small, half = codes.to(torch.uint8), INT4_GROUP // 2
        nibbles = (small[..., :half] | (small[..., half:] << 4)).reshape(weight.shape[0], -1).contiguous()
        prefill = Q4Codes(nibbles, scale[..., 0].half().contiguous(), low[..., 0].half().contiguous())
    return Int4Weight(packed, scales_and_zeros, weight.shape[0], prefill)


def dequantize_int4(weight: Int4Weight) -> torch.Tensor:
    """The bf16 ``[out, in]`` weight the kernel multiplies by (for tests and checks)."""
    in_features = weight.scales_and_zeros.shape[0] * INT4_GROUP
    eye = torch.eye(in_features, dtype=torch.bfloat16)
    return _int4_product(eye, weight).t().contiguous()


def _int4_product(flat: torch.Tensor, weight: Int4Weight) -> torch.Tensor:
    return torch.ops.aten._weight_int4pack_mm_for_cpu(
        flat.contiguous(), weight.packed, INT4_GROUP, weight.scales_and_zeros
    )


def onednn_available() -> bool:
    return bool(torch.backends.mkldnn.is_available())


def onednn_packs(dtype: torch.dtype) -> bool:
    """Whether oneDNN packs weights of ``dtype`` here: bf16 ones need AVX-512 (it refuses on AVX2)."""
    if dtype == torch.bfloat16 and not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return False
    return dtype in (torch.float32, torch.bfloat16) and onednn_available()


def pack(weight: torch.Tensor) -> torch.Tensor | NativeWeight | AmxWeight:
    """Return ``weight`` ([out, in]) in the fastest layout :func:`linear` accepts on this machine.

    bfloat16 weights are packed too: on AVX512-BF16 CPUs a packed bf16 projection streams half the
    bytes and ran 2.3x (one row) to 3.7x (sixteen rows) faster than packed fp32 here.
    """
    if weight.dim() == 2 and native.supports(weight.dtype, weight.shape[1]):
        if native.tiles(weight.dtype):
            return AmxWeight(amx_tiles(weight), weight.shape[0])
        return NativeWeight(weight.contiguous())
    if onednn_packs(weight.dtype):
        return torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), None)
    return weight.contiguous()


EXACT_ROWS = 16  # decoding's row counts: padding them would cost up to 2x on the hottest path
BF16_ONE_ROW_MAX_FEATURES = 1024
BF16_MAX_ROWS = 32  # rows per bf16 product: above this oneDNN takes AMX tiles where the CPU has them


def padded_rows(rows: int, dtype: torch.dtype = torch.float32, features: int = 0) -> int:
    """``rows`` rounded up to a kernel size: exact up to ``EXACT_ROWS``, then 8 sizes per doubling."""
    if rows == 1 and dtype == torch.bfloat16 and features > BF16_ONE_ROW_MAX_FEATURES:
        return 2
    if rows <= EXACT_ROWS:
        return rows
    step = (1 << (rows.bit_length() - 1)) // 8
    return -(-rows // step) * step


def linear(x: torch.Tensor, weight: Weight, prefill: bool = False) -> torch.Tensor:
    """``x @ weight.T`` for a weight from :func:`pack` or :func:`quantize_int4` (or any plain tensor).

    ``prefill``: a prompt's rows. torch's int4 kernel is cheapest for one row but adds about as much
    again per row, so a prompt's int4 products run in the native kernel where it is built (a prompt's
    positions are computed by prefill alone, in speculative and target-only decoding alike).
    """
    if isinstance(weight, AmxWeight):
        return native.product_amx(x, weight.tiles, weight.out_features)
    if isinstance(weight, NativeWeight):
        return native.product(x, weight.weight)
    if isinstance(weight, Int4Weight) and prefill and weight.prefill is not None:
        q4 = weight.prefill
        return native.product_q4(x, q4.codes, q4.scales, q4.mins)
    if isinstance(weight, Int4Weight):
        out = _int4_product(x.reshape(-1, x.shape[-1]), weight)
        return out.view(*x.shape[:-1], weight.out_features)
    if not weight.is_mkldnn:
        return F.linear(x, weight)
    flat = x.reshape(-1, x.shape[-1])
    rows = flat.shape[0]
    if flat.dtype == torch.bfloat16 and rows > BF16_MAX_ROWS:
        parts = [linear(part, weight) for part in flat.split(BF16_MAX_ROWS)]
        return torch.cat(parts).view(*x.shape[:-1], -1)
    padded = padded_rows(rows, flat.dtype, flat.shape[-1])
    if padded != rows:
        flat = F.pad(flat, (0, 0, 0, padded - rows))
    out = torch.ops.mkldnn._linear_pointwise(flat.contiguous(), weight, None, "none", [], "")
    return out[:rows].view(*x.shape[:-1], out.shape[-1])
