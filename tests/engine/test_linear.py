"""Packed products: padded row counts keep oneDNN's kernel caches small without changing results."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F

from borealis.cpu import bf16_native
from tests.kernel_memory import first_and_second_pass_mib
from worker.engine.linear import EXACT_ROWS, linear, onednn_available, pack, padded_rows

needs_onednn = pytest.mark.skipif(not onednn_available(), reason="oneDNN packing unavailable")


def test_padded_rows_are_exact_for_decoding_and_within_an_eighth_above() -> None:
    sizes = [padded_rows(rows) for rows in range(1, 4097)]
    assert sizes[:EXACT_ROWS] == list(range(1, EXACT_ROWS + 1))
    for rows, size in enumerate(sizes, start=1):
        assert rows <= size <= rows * 1.125
    assert sizes == sorted(sizes)
    assert len(set(sizes[:256])) == EXACT_ROWS + 4 * 8  # 17..256: four doublings, eight sizes each


@needs_onednn
@pytest.mark.parametrize("shape", [(1, 1, 64), (1, 17, 64), (3, 23, 64), (150, 64), (2, 5, 64)])
def test_packed_linear_matches_plain_linear(shape: tuple[int, ...]) -> None:
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(96, 64, generator=generator)
    x = torch.randn(*shape, generator=generator)
    got = linear(x, pack(weight))
    assert got.shape == (*shape[:-1], 96)
    torch.testing.assert_close(got, F.linear(x, weight), atol=1e-4, rtol=1e-4)


KERNEL_MEMORY_SCRIPT = """
import sys, torch
from tests.kernel_memory import malloc_in_use_mib
from worker.native_memory import limit_kernel_caches
if len(sys.argv) > 1:
    limit_kernel_caches(int(sys.argv[1]))
from tests.kernel_memory import first_and_second_pass_mib
from worker.engine.linear import linear, pack

torch.set_num_threads(1)
weight = pack(torch.randn(256, 128))
start = malloc_in_use_mib()
for rows in range(1, 257):
    linear(torch.randn(rows, 128), weight)
first = malloc_in_use_mib()
for rows in range(1, 257):
    linear(torch.randn(rows, 128), weight)
print(first - start, malloc_in_use_mib() - first)
"""


@needs_onednn
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallinfo2 is glibc")
def test_every_row_count_costs_bounded_kernel_memory_once() -> None:
    # Unpadded, 256 row counts built 256 kernels: about 150 MiB held for good.
    first, second = first_and_second_pass_mib(KERNEL_MEMORY_SCRIPT)
    assert first < 48, f"{first:.1f} MiB of kernels for one weight"
    assert second < 2, "a second pass over the same row counts built new kernels"
    capped_first, _ = first_and_second_pass_mib(KERNEL_MEMORY_SCRIPT, "4")
    assert capped_first < 12, f"{capped_first:.1f} MiB with the caches capped at 4 kernels"


@needs_onednn
@pytest.mark.skipif(not bf16_native(), reason="this CPU has no native bfloat16")
def test_a_bf16_row_rounds_alike_alone_and_among_other_rows() -> None:
    # 1536 input features: the shape (SmolLM2's down projection) where a lone row used to round apart
    generator = torch.Generator().manual_seed(0)
    weight = pack((torch.randn(576, 1536, generator=generator) * 0.05).to(torch.bfloat16))
    x = torch.randn(80, 1536, generator=generator).to(torch.bfloat16)
    alone = torch.cat([linear(x[i : i + 1], weight) for i in range(80)])
    # past 32 rows AMX CPUs (Intel Sapphire Rapids on) took tiles that round apart, unless split
    for rows in (2, 3, 8, 17, 24, 32, 33, 36, 48, 67, 80):
        assert torch.equal(linear(x[:rows], weight), alone[:rows]), rows
