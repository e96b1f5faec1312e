"""Control-plane state for ``/metrics``, read at scrape time: what an SRE alerts on.

Learning paused, draft versions by status (pending approvals among them), the live draft, workers
healthy and stale, requests running on them, how many hold the desired draft, and each worker's
resident memory as its heartbeat reports it. Every label value is bounded: statuses are a fixed
set, workers are what the deployment runs.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.crud import drafts
from backend.crud.workers import is_healthy, list_workers
from backend.db.models import DraftVersion
from backend.services.learning import read_learning
from backend.services.registry import desired_version
from borealis.wire import WorkerRegistration


class ControlPlaneState(Collector):
    def __init__(self, sessions: Callable[[], Session], stale_after_s: float, model_name: str) -> None:
        self._sessions = sessions
        self._stale_after_s = stale_after_s
        self._model_name = model_name
        self._lock = threading.Lock()
        self._beats: dict[str, WorkerRegistration] = {}  # each worker's latest heartbeat

    def report_worker(self, beat: WorkerRegistration) -> None:
        with self._lock:
            self._beats[beat.worker_id] = beat

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        with self._sessions() as session:
            paused = read_learning(session).paused
            rows = session.execute(select(DraftVersion.status, func.count()).group_by(DraftVersion.status))
            by_status = Counter({str(status): int(count) for status, count in rows})
            live = drafts.live(session)
            desired = desired_version(session)
            workers = list_workers(session)
        yield GaugeMetricFamily("borealis:learning_paused", "1 while learning is paused.", value=int(paused))
        versions = GaugeMetricFamily(
            "borealis:draft_versions", "Draft versions by status.", labels=["status"]
        )
        for status in drafts.STATUSES:
            versions.add_metric([status], by_status.get(status, 0))
        yield versions
        info = GaugeMetricFamily(
            "borealis:live_draft_info", "The live draft version (value 1).", labels=["draft_version"]
        )
        if live is not None:
            info.add_metric([live.id], 1)
        yield info
        healthy = [w for w in workers if is_healthy(w, self._stale_after_s)]
        states = GaugeMetricFamily(
            "borealis:workers", "Registered inference workers by state.", labels=["state"]
        )
        states.add_metric(["healthy"], len(healthy))
        states.add_metric(["stale"], len(workers) - len(healthy))
        yield states
        with self._lock:
            beats = dict(self._beats)
        waiting = sum(min(beats[w.id].waiting_requests, w.active_requests) for w in healthy if w.id in beats)
        running = GaugeMetricFamily(
            "borealis:num_requests_running",
            "Requests in a decoding batch on healthy workers, as their heartbeats report (vLLM's name).",
            labels=["model_name"],
        )
        running.add_metric([self._model_name], sum(w.active_requests for w in healthy) - waiting)
        yield running
        queued = GaugeMetricFamily(
            "borealis:num_requests_waiting",
            "Requests admitted on healthy workers and waiting for a batch slot (vLLM's name).",
            labels=["model_name"],
        )
        queued.add_metric([self._model_name], waiting)
        yield queued
        on_desired = sum(1 for w in healthy if desired is None or w.draft_version == desired)
        yield GaugeMetricFamily(
            "borealis:workers_on_desired_draft",
            "Healthy workers holding the desired draft version (converged when equal to healthy).",
            value=on_desired,
        )
        memory = GaugeMetricFamily(
            "borealis:worker_resident_memory_bytes", "Inference workers' resident memory.", labels=["worker"]
        )
        cpu = CounterMetricFamily(
            "borealis:worker_cpu_seconds", "Inference workers' CPU time (from heartbeats).", labels=["worker"]
        )
        for worker in workers:
            beat = beats.get(worker.id)
            if beat is not None and beat.rss_bytes:
                memory.add_metric([worker.id], beat.rss_bytes)
            if beat is not None and beat.cpu_seconds:
                cpu.add_metric([worker.id], beat.cpu_seconds)
        yield memory
        yield cpu
