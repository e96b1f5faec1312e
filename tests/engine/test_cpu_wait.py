"""The run-queue wait the controller reads is the kernel's, and grows while other processes hold the cores."""

from __future__ import annotations

import multiprocessing
import os
import sys
import time

import pytest

from worker.engine.cpu_wait import waited_seconds


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the scheduler's statistics are Linux's")
def test_waiting_for_a_core_shows_while_other_processes_hold_them() -> None:
    quiet_before = waited_seconds()
    _spin(0.2)
    quiet = waited_seconds() - quiet_before
    hogs = [multiprocessing.Process(target=_spin, args=(1.5,)) for _ in range((os.cpu_count() or 1) + 1)]
    for hog in hogs:
        hog.start()
    try:
        time.sleep(0.2)  # the hogs running
        loaded_before = waited_seconds()
        _spin(0.6)
        loaded = waited_seconds() - loaded_before
    finally:
        for hog in hogs:
            hog.join()
    # a third of the spin or more spent waiting: sharing the cores with more busy processes than cores
    assert quiet >= 0.0 and loaded > quiet + 0.1
