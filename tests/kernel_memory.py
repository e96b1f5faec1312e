"""Kernel-cache memory measured in a fresh process (oneDNN reads its cache capacity only once).

A measuring script imports :func:`malloc_in_use_mib` and prints two numbers: MiB held after a first
pass over some shapes, and MiB more after a second pass over the same shapes.
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


MALLINFO2_FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in MALLINFO2_FIELDS.split()]


def malloc_in_use_mib() -> float:
    """glibc's bytes in use, on the heap and in mmapped blocks (kernels land in either)."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return float(info.uordblks + info.hblkhd) / 2**20


def first_and_second_pass_mib(
    script: str, *args: str, env: dict[str, str] | None = None
) -> tuple[float, float]:
    """Run ``script`` in a fresh interpreter at the repository root; return the two MiB it prints."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env=env,
        check=True,
    )
    first, second = done.stdout.split()
    return float(first), float(second)
