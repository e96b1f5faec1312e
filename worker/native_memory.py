"""Native memory settings for long-running workers: glibc's allocator and oneDNN's kernel caches.

Every draft swap allocates a new draft (tens of MB, loaded on its own thread) and a new draft
KV cache, and frees the old ones; a trainer round builds and drops hundreds of MB of examples.
glibc raises its mmap threshold each time a large mmapped block is freed; later blocks of that
size come from the heap, where freed space fragments and stays resident, and each loading thread
may get its own arena. A fixed threshold sends large tensors to mmap, whose pages go back to the
OS when the tensor is freed, and a small arena cap bounds the rest.

oneDNN keeps every kernel it has built (one per matrix shape, about 0.6 MB each) in two caches of
1024 entries by default; a smaller capacity bounds that memory (see ``worker.engine.linear``). A
trainer's is smaller still: it prefills every trace at its own length, so it meets every kernel size.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

from borealis.settings import Settings

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc mallopt parameters (malloc.h)
M_ARENA_MAX = -8
KERNEL_CACHE_VARIABLES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")  # oneDNN, ideep


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
    """Return freed heap pages to the OS (after a swap dropped the previous draft, after a round)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def limit_kernel_caches(capacity: int) -> None:
    """Cap oneDNN's kernel caches; only effective before the process runs its first oneDNN op.

    Both libraries read the capacity once, when their cache is first used, so this must run before
    any model is loaded (packing weights is already a oneDNN op). An operator's own value wins.
    """
    for name in KERNEL_CACHE_VARIABLES:
        os.environ.setdefault(name, str(capacity))


def configure_native_memory(settings: Settings, kernel_cache_capacity: int) -> None:
    """Process start of a worker or trainer: allocator settings and kernel-cache cap, before any model."""
    if settings.worker_tune_allocator:
        tune_allocator()
    limit_kernel_caches(kernel_cache_capacity)
