"""Turns a finished request into a ``TraceRecord`` and hands it to the non-blocking exporter.

Runs on the HTTP side, never on the engine thread: building and serialising a record must not
delay decoding, and a slow or absent Redis only costs dropped (counted) records.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from borealis.wire import GenerateRequest, TraceRecord
from worker.engine.tracelog import wire_steps
from worker.engine.types import FinishReason, StepTrace
from worker.traces.domain import resolve_domain
from worker.traces.exporter import TraceExporter
from worker.traces.features import encode_features


@dataclass(frozen=True)
class FinishedRequest:
    request: GenerateRequest
    prompt_ids: list[int]
    output_ids: list[int]
    steps: tuple[StepTrace, ...]
    prompt_text: str
    completion_text: str
    started_at: float
    finish_reason: FinishReason
    draft_version: str | None
    features: torch.Tensor | None = None  # [N, 4H] float16 from the engine, for the side store
    steps_exact: bool = True  # False: the engine could not rebuild its steps (``steps`` empty)


class TraceSink:
    def __init__(self, exporter: TraceExporter, worker_id: str, model: str) -> None:
        self.exporter = exporter
        self.worker_id = worker_id
        self.model = model
        self.paused_drop = False  # learning paused and configured to drop rather than queue
        self.dropped_while_paused = 0

    def record(self, finished: FinishedRequest) -> None:
        if self.paused_drop:
            self.dropped_while_paused += 1
            return
        request = finished.request
        domain, source = resolve_domain(request.domain, finished.prompt_text + finished.completion_text)
        steps = wire_steps(finished.steps, len(finished.output_ids))
        record = TraceRecord(
            request_id=request.request_id,
            worker_id=self.worker_id,
            model=self.model,
            draft_version=finished.draft_version,
            domain=domain,
            domain_source=source,
            caller=request.caller,
            started_at=finished.started_at,
            finished_at=max(time.time(), finished.started_at),
            finish_reason=finished.finish_reason,
            temperature=request.temperature,
            top_p=request.top_p,
            prompt_ids=finished.prompt_ids,
            output_ids=finished.output_ids,
            steps=steps,
            steps_exact=finished.steps_exact,
        )
        features = finished.features
        self.exporter.export(record, encode_features(features.numpy()) if features is not None else None)

    @property
    def exported(self) -> int:
        return self.exporter.stats().exported

    @property
    def features_stored(self) -> int:
        return self.exporter.stats().features.stored

    @property
    def features_dropped(self) -> int:
        features = self.exporter.stats().features
        return features.dropped_budget + features.failed

    @property
    def dropped(self) -> int:
        return self.exporter.stats().dropped + self.dropped_while_paused
