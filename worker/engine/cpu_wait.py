"""How long the calling thread has waited for a core: the scheduler's run-queue delay (Linux).

A step timed while another process held the cores (a trainer beside the worker) cost more than the same
step on a quiet machine, and the planner would carry that cost for as long as it chose other plans."""

from __future__ import annotations

_SCHEDSTAT = "/proc/thread-self/schedstat"  # "<on-cpu ns> <run-queue wait ns> <timeslices>"


def waited_seconds() -> float:
    """The thread's total run-queue wait so far; 0 where the kernel does not say (no step looks loaded)."""
    try:
        with open(_SCHEDSTAT, "rb") as stat:
            return int(stat.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0
