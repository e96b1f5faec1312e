"""A training worker's duty cycle: compute for a share of wall time, rest for the rest.

A trainer that cannot yield the CPU to serving (``trainer_sched_idle`` off, or no SCHED_IDLE) competes
with decoding for cores and memory bandwidth; resting in proportion to each piece of work leaves
serving the rest (``trainer_duty_cycle``; 0.25 kept serving at 0.77-0.79 of its paused speed).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Pacer:
    def __init__(self, duty_cycle: float) -> None:
        self.duty_cycle = duty_cycle

    def rest(self, busy_s: float) -> None:
        """Sleep so that ``busy_s`` of work is ``duty_cycle`` of the wall time it took with the rest."""
        if self.duty_cycle < 1.0:
            time.sleep(busy_s * (1.0 / self.duty_cycle - 1.0))

    def paced(self, work: Callable[..., T], *args: Any) -> T:
        """``work(*args)``, then rest in proportion."""
        started = time.monotonic()
        result = work(*args)
        self.rest(time.monotonic() - started)
        return result
