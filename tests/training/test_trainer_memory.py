"""A training worker's kernel memory stays bounded while it prefills traces of every length.

Each trace is one prefill at its own length, so a trainer meets far more row counts than serving
(whose prefill is chunked): with serving's cache capacity its memory floor rose for as long as new
lengths kept arriving. The training worker's process start caps the caches lower.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from worker.engine.linear import onednn_available

PREFILL_SCRIPT = """
import ctypes, sys
from worker.training.celery_factory import _configure_process
_configure_process()
from worker.draft.examples import build_example
from worker.draft.vocab import DraftVocab
from worker.engine.linear import padded_rows
from worker.engine.llama import LlamaModel

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
def in_use_mib():
    info = libc.mallinfo2()
    return (info.uordblks + info.hblkhd) / 2**20

target = LlamaModel.load(sys.argv[1])
vocab = DraftVocab.from_sequences([list(range(200))], 200, target.spec.vocab_size)
lengths = sorted({padded_rows(n) for n in range(17, 1025)})  # one length per kernel size
build_example(target, vocab, list(range(16)), 8, "warm-up")
start = in_use_mib()
for n in lengths:
    build_example(target, vocab, [i % 200 for i in range(n)], n // 2, "d")
first = in_use_mib()
for n in lengths:
    build_example(target, vocab, [i % 200 for i in range(n)], n // 2, "d")
print(first - start, in_use_mib() - first)
"""


def _kernel_memory(model_dir: Path, env: dict[str, str]) -> tuple[float, float]:
    """(MiB held after prefills of every length once, MiB more after a second pass), fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PREFILL_SCRIPT), str(model_dir)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=True,
    )
    first, second = done.stdout.split()
    return float(first), float(second)


@pytest.mark.skipif(not onednn_available(), reason="oneDNN kernels only")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallinfo2 is glibc")
def test_prefills_of_every_trace_length_hold_bounded_kernel_memory(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOREALIS_", "ONEDNN_", "LRU_"))}
    env.update({"BOREALIS_HOME": str(tmp_path), "BOREALIS_THREADS": "1"})
    # 5 weight shapes x 48 padded lengths: 240 kernels, over 100 MiB at serving's capacity of 512
    first, second = _kernel_memory(tiny_model_dir, env)
    assert first < 48, f"{first:.1f} MiB held after prefills of 48 lengths"
    assert second < 8, f"{second:.1f} MiB more on a second pass over the same lengths"
