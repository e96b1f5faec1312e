"""Traces from the bus into the trainer: each read once, kept until the round that holds it is on disk.

A delivery's domain is mapped onto the operator's allowlist; a trace with token ids outside the
target's vocabulary goes to the dead letters; drift is observed on every trace (a shift arms the
learning-rate boost); a stable hash sends a share to the held-out set, the rest wait on probation:
the next candidate is judged on them before any draft trains on them (test, then train), and only
then do they enter the replay buffer. Entry ids wait in ``unacked`` until ``commit`` has saved the checkpoint
that contains them: a trainer killed before that gets them again.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from borealis.domains import OTHER, canonical_domain
from borealis.settings import TrainerSettings
from borealis.wire import DriftReport, TraceRecord
from worker.traces.codec import Rejection
from worker.traces.consumer import TraceConsumer
from worker.traces.drift import DriftMonitor, DriftWindow
from worker.traces.replay import ReplayBuffer
from worker.training.checkpoint import Checkpoint, TrainerState
from worker.training.control import ControlPlane
from worker.training.heldout import HeldOut

log = logging.getLogger(__name__)


class TraceIntake:
    def __init__(
        self,
        settings: TrainerSettings,
        consumer: TraceConsumer,
        control: ControlPlane,
        target_vocab_size: int,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.control = control
        self.target_vocab_size = target_vocab_size
        self.replay = ReplayBuffer(
            settings.replay_max_records,
            settings.replay_max_tokens,
            settings.replay_half_life_seconds,
            max_caller_share=settings.max_caller_share,
        )
        self.heldout = HeldOut(
            settings.heldout_fraction, settings.heldout_max_records, settings.max_caller_share
        )
        self.drift = DriftMonitor.from_settings(settings.drift)
        self.probation: list[TraceRecord] = []  # read, not yet trained on: judged first, then learned
        self.unacked: list[str] = []  # entry ids read since the last checkpoint
        self.seen: set[str] = set()  # entry ids in the last checkpoint: a redelivery is not learned twice
        self.fresh = 0  # traces put in the replay buffer since ``take_fresh``
        self.recent: list[list[int]] = []  # their outputs, for the round's vocabulary check

    def restore(self, checkpoint: Checkpoint) -> None:
        """Replay and held-out traces from a checkpoint; its traces acked again (the crash may have
        come between the checkpoint and the ack)."""
        for record in checkpoint.replay:
            self.replay.add(record)
        for record in checkpoint.heldout:
            self.heldout.add(record)
        self.probation = list(checkpoint.probation)
        self.seen = set(checkpoint.state.acked_ids)
        self.consumer.ack(checkpoint.state.acked_ids)

    @property
    def holding(self) -> int:
        """Traces read and not yet acknowledged."""
        return len(set(self.unacked))

    def take_fresh(self) -> int:
        fresh, self.fresh = self.fresh, 0
        return fresh

    def take_recent(self) -> list[list[int]]:
        recent, self.recent = self.recent, []
        return recent

    def read(self, state: TrainerState) -> int:
        """One read of the bus (own unacked backlog first); returns the deliveries read."""
        deliveries = self.consumer.read(self.settings.read_batch, block_ms=1000)
        for delivery in deliveries:
            self.unacked.append(delivery.entry_id)
            record = delivery.record
            domain = canonical_domain(record.domain, self.settings.allowed_domains) or OTHER
            if domain != record.domain:  # a label the operator does not allow: counted as `other`
                record = record.model_copy(update={"domain": domain})
            tokens = record.prompt_ids + record.output_ids
            if delivery.entry_id in self.seen or not record.output_ids:
                continue  # already trained on, or nothing generated: acked, not learned
            if max(tokens) >= self.target_vocab_size:
                detail = f"token id {max(tokens)} outside the target's vocabulary of {self.target_vocab_size}"
                self.consumer.reject(delivery, Rejection("foreign_tokens", detail))
                continue
            self._observe_drift(record, state)
            if self.heldout.takes(record):
                self.heldout.add(record)
                state.heldout_records += 1
            else:
                self.probation.append(record)
        return len(deliveries)

    def release(self, state: TrainerState) -> None:
        """The traces on probation into the replay buffer: judged on (or not needed for that), now learned."""
        for record in self.probation:
            self._learn(record, state)
        self.probation = []

    def _observe_drift(self, record: TraceRecord, state: TrainerState) -> None:
        window = self.drift.observe(record)
        if window is None:
            return
        self.control.report_drift(self._drift_report(window))
        if window.shift:
            state.boost_rounds_left = self.settings.shift_boost_rounds
            log.info("domain shift detected (window %d): learning rate raised", window.index)

    def _learn(self, record: TraceRecord, state: TrainerState) -> None:
        self.replay.add(record)
        state.trained_records += 1
        self.fresh += 1
        self.recent.append(record.output_ids)
        start, end = state.window_start, state.window_end
        state.window_start = min(start, record.finished_at) if start else record.finished_at
        state.window_end = max(end or 0.0, record.finished_at)

    def _drift_report(self, window: DriftWindow) -> DriftReport:
        return DriftReport(
            trainer=self.consumer.name,
            js_threshold=self.settings.drift.js_threshold,
            mix_threshold=self.settings.drift.mix_threshold,
            **dataclasses.asdict(window),
        )

    def commit(self, state: TrainerState, save: Callable[[], None]) -> None:
        """Record what was read in ``state``, ``save`` the checkpoint, and only then ack it."""
        state.acked_ids = list(self.unacked)
        state.acked_records += len(set(self.unacked) - self.seen)
        save()
        self.consumer.ack(self.unacked)
        self.seen = set(self.unacked)
        self.unacked = []
