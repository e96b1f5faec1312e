"""Training-worker progress for ``/api/trainers``, ``/metrics`` and benchmarks: the latest report of each.

Trainers post a ``TrainerProgress`` after every round; the control plane keeps the latest per
trainer in memory (telemetry, not state: a restarted control plane knows a trainer again after its
next round). At most ``MAX_TRAINERS`` are kept, the longest silent forgotten first, so a stream of
made-up names cannot grow memory or the metric's label set.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from borealis.wire import TrainerProgress

MAX_TRAINERS = 64


@dataclass(frozen=True)
class ReportedProgress:
    progress: TrainerProgress
    received_at: float  # time.time() on the control plane


class TrainerMonitor(Collector):
    def __init__(self, max_trainers: int = MAX_TRAINERS) -> None:
        self._max = max_trainers
        self._lock = threading.Lock()
        self._latest: dict[str, ReportedProgress] = {}

    def report(self, progress: TrainerProgress) -> None:
        with self._lock:
            self._latest[progress.trainer] = ReportedProgress(progress, time.time())
            while len(self._latest) > self._max:
                oldest = min(self._latest.values(), key=lambda r: r.received_at)
                del self._latest[oldest.progress.trainer]

    def latest(self) -> list[ReportedProgress]:
        with self._lock:
            return sorted(self._latest.values(), key=lambda r: r.progress.trainer)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        counters = {
            "optimizer_steps": "Optimizer steps taken on the draft, by trainer.",
            "trained_records": "Trace records put in the replay buffer to train on, by trainer.",
            "heldout_records": "Trace records held out for shadow evaluation, by trainer.",
            "trained_rows": "Token positions optimizer steps trained on (repeats counted), by trainer.",
            "acked_records": "Trace records the trainer has finished with and acknowledged, by trainer.",
            "cpu_seconds": "CPU seconds the training process has used since it started, by trainer.",
        }
        families = {
            field: CounterMetricFamily(f"borealis:trainer_{field}", doc, labels=["trainer"])
            for field, doc in counters.items()
        }
        rss = GaugeMetricFamily(
            "borealis:trainer_rss_bytes", "Resident memory of the training process.", labels=["trainer"]
        )
        seen = GaugeMetricFamily(
            "borealis:trainer_last_progress_timestamp_seconds",
            "When the trainer last reported a round (Unix time).",
            labels=["trainer"],
        )
        for reported in self.latest():
            progress = reported.progress
            values = progress.model_dump()
            for field, family in families.items():
                family.add_metric([progress.trainer], values[field])
            rss.add_metric([progress.trainer], progress.rss_bytes)
            seen.add_metric([progress.trainer], reported.received_at)
        yield from families.values()
        yield rss
        yield seen
