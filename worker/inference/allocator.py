"""glibc allocator settings for a long-running worker that loads and drops large tensors.

Every draft swap allocates a new draft (tens of MB, loaded on its own thread) and a new draft
KV cache, and frees the old ones. glibc raises its mmap threshold each time a large mmapped block
is freed; later blocks of that size come from the heap, where freed space fragments and stays
resident, and each loading thread may get its own arena. A fixed threshold sends large tensors to
mmap, whose pages go back to the OS when the tensor is freed, and a small arena cap bounds the rest.
"""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc mallopt parameters (malloc.h)
M_ARENA_MAX = -8


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def tune_allocator(mmap_threshold_bytes: int = 1 << 20, max_arenas: int = 2) -> bool:
    """Fix the mmap threshold and cap arenas; False where the C library is not glibc."""
    libc = _libc()
    if libc is None:
        return False
    ok = libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold_bytes) == 1
    ok = libc.mallopt(M_ARENA_MAX, max_arenas) == 1 and ok
    if not ok:
        log.warning("glibc refused the allocator settings; memory may grow with draft swaps")
    return ok


def release_free_memory() -> None:
    """Return freed heap pages to the OS (after a swap dropped the previous draft)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
