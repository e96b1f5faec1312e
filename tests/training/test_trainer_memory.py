"""A training worker's kernel memory stays bounded while it prefills traces of every length.

Each trace is one prefill at its own length, so a trainer meets far more row counts than serving
(whose prefill is chunked): with serving's cache capacity its memory floor rose for as long as new
lengths kept arriving. The training worker's process start caps the caches lower.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.kernel_memory import first_and_second_pass_mib
from worker.engine.linear import onednn_available

PREFILL_SCRIPT = """
import sys
from worker.training.celery_factory import _configure_process
_configure_process()
from tests.kernel_memory import malloc_in_use_mib
from worker.draft.examples import build_example
from worker.draft.vocab import DraftVocab
from worker.engine.linear import padded_rows
from worker.engine.llama import LlamaModel

target = LlamaModel.load(sys.argv[1])
vocab = DraftVocab.from_sequences([list(range(200))], 200, target.spec.vocab_size)
lengths = sorted({padded_rows(n) for n in range(17, 1025)})  # one length per kernel size
build_example(target, vocab, list(range(16)), 8, "warm-up")
start = malloc_in_use_mib()
for n in lengths:
    build_example(target, vocab, [i % 200 for i in range(n)], n // 2, "d")
first = malloc_in_use_mib()
for n in lengths:
    build_example(target, vocab, [i % 200 for i in range(n)], n // 2, "d")
print(first - start, malloc_in_use_mib() - first)
"""


@pytest.mark.skipif(not onednn_available(), reason="oneDNN kernels only")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallinfo2 is glibc")
def test_prefills_of_every_trace_length_hold_bounded_kernel_memory(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOREALIS_", "ONEDNN_", "LRU_"))}
    env.update({"BOREALIS_HOME": str(tmp_path), "BOREALIS_THREADS": "1"})
    # 5 weight shapes x 48 padded lengths: 240 kernels, over 100 MiB at serving's capacity of 512
    first, second = first_and_second_pass_mib(PREFILL_SCRIPT, str(tiny_model_dir), env=env)
    assert first < 48, f"{first:.1f} MiB held after prefills of 48 lengths"
    assert second < 8, f"{second:.1f} MiB more on a second pass over the same lengths"
