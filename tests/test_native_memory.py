"""The worker's glibc allocator settings apply on Linux (the memory-flatness measurement depends on them)."""

from __future__ import annotations

import sys

import pytest

from worker.native_memory import release_free_memory, tune_allocator


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_glibc_accepts_the_settings_and_trims() -> None:
    assert tune_allocator() is True
    release_free_memory()
