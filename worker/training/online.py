"""Online training rounds: traces in, a better draft out, without losing acknowledged work.

One round: ask the control plane whether learning is on; read traces (``intake.py``: own unacked
backlog first, a share held out, drift observed, the rest on probation); when a candidate is due, the
draft as it stands is judged against the live one on the probation traces and the held-out ones
(``candidates.py``) and published; then the probation traces are learned: remap cold vocabulary rows
if their outputs fall outside the draft's vocabulary, train a few steps (a detected shift raises the
learning rate for a while); checkpoint; only then ack what was read.

Test, then train (prequential): every trace judges one candidate before any draft trains on it, so
right after a shift a candidate is judged on the whole of the new traffic since the last one, not on
the held-out share of it (a tenth: two or three traces a window, too few for the paired interval).
"""

from __future__ import annotations

import logging
import socket
import time
from collections import Counter
from typing import Any

import torch

from borealis.control_client import ControlPlaneError
from borealis.processes import rss_kib
from borealis.settings import Settings, TrainerSettings
from borealis.wire import TraceRecord, TrainerProgress
from worker.draft.examples import Example
from worker.draft.model import Eagle3Draft, new_draft
from worker.draft.remap import plan_remap
from worker.draft.trainer import DraftTrainer, StepMetrics, TrainConfig
from worker.draft.vocab import DraftVocab
from worker.engine import native
from worker.engine.llama import LlamaModel
from worker.traces.consumer import TraceConsumer
from worker.traces.features import FeatureReader, feature_reader
from worker.traces.replay import record_tokens
from worker.training.candidates import Candidates
from worker.training.checkpoint import TrainerState, load_checkpoint, save_checkpoint
from worker.training.control import ControlPlane
from worker.training.examples_cache import ExampleCache
from worker.training.intake import TraceIntake
from worker.training.pacing import Pacer
from worker.training.reports import CandidateReport, RemapReport, RoundReport, TrainingReport

log = logging.getLogger(__name__)


def consumer_name(settings: Settings) -> str:
    return settings.trainer_consumer_name or f"trainer-{socket.gethostname()}"


class OnlineTrainer:
    def __init__(
        self,
        settings: TrainerSettings,
        target: LlamaModel,
        consumer: TraceConsumer,
        control: ControlPlane,
        features: FeatureReader | None = None,
    ):
        self.settings = settings
        self.target = target
        self.consumer = consumer
        self.control = control
        self.root = settings.root
        self.intake = TraceIntake(settings, consumer, control, target.spec.vocab_size)
        self.pacer = Pacer(settings.duty_cycle)
        self._examples = ExampleCache(target, settings.feature_cache_tokens, features)
        self.candidates = Candidates(
            self.root,
            target,
            control,
            self._examples,
            self.intake.heldout,
            self.pacer,
            settings.eval_depth,
            settings.judge_max_traces,
        )
        self.state = TrainerState()
        self.trainer: DraftTrainer | None = None
        self._round_losses: list[tuple[float, float]] = []  # (loss, top-1) of rounds since the last candidate
        self._step_credit = 0.0  # steps owed under ``steps_per_trace``, fractions carried over
        self._last_judged_round = 0  # the round whose candidate was judged last
        self._held_rounds = 0  # rounds a due candidate has waited for fresh traces
        self._remap_pending: list[list[int]] = []  # outputs read since the last remap decision
        self._resume()

    # -- lifecycle -----------------------------------------------------------------------------

    def _resume(self) -> None:
        checkpoint = load_checkpoint(self.root / "checkpoints")
        if checkpoint is None:
            return
        self.state = checkpoint.state
        self.trainer = self._new_trainer(checkpoint.draft)
        if checkpoint.optimizer is not None:
            self.trainer.optimizer.load_state_dict(checkpoint.optimizer)
        self.trainer.steps_done = self.state.optimizer_steps
        self._last_judged_round = (self.state.last_candidate_round or 0) + 1
        self.intake.restore(checkpoint)
        log.info("trainer resumed at round %d", self.state.round)

    def _new_trainer(self, draft: Eagle3Draft) -> DraftTrainer:
        return DraftTrainer(draft, self.target.embed, TrainConfig.online(self.settings))

    def _start_draft(self, live: str | None) -> None:
        """The live draft if there is one (learning continues from what serves), else day-0 weights."""
        if live is not None:
            draft = self.candidates.live_draft(live)
            if draft is not None:
                self.trainer = self._new_trainer(draft.copy())
                self.state.live_version = live
                return
        replay = self.intake.replay
        if len(replay) < self.settings.min_records:
            return
        records = replay.sample(len(replay))
        vocab = DraftVocab.from_outputs(
            [(record.domain, record.output_ids) for record in records],
            self.settings.draft_vocab_size,
            self.target.spec.vocab_size,
            [record.prompt_ids for record in records],
        )
        self.intake.take_recent()  # the new vocabulary was chosen from these very outputs
        self.trainer = self._new_trainer(new_draft(self.target.spec, vocab))

    # -- one round ------------------------------------------------------------------------------

    def run_round(self) -> RoundReport:
        paused, live = self.control.learning_state()
        if paused:
            return {"status": "paused"}
        if self.state.live_version is None and live is not None:
            self.state.live_version = live
        read = self.intake.read(self.state)
        report: RoundReport = {"status": "idle", "round": self.state.round, "read": read}
        if self.trainer is None:
            self.intake.release(self.state)  # no draft to judge yet: learn to start one
            self._start_draft(live)
        elif self._candidate_due() and (read or self.intake.probation):
            if self._enough_to_judge(read):
                report["candidate"] = self.candidate(live)
                self._last_judged_round = self.state.round + 1
                self._held_rounds = 0
                self.intake.release(self.state)
            else:
                self._held_rounds += 1  # wait for more traces no draft has seen; replay trains meanwhile
        else:
            self.intake.release(self.state)
        report["examples"] = self._examples.sources.counts()
        recent = self.intake.take_recent()
        if self.trainer is not None and recent:
            remap = self._remap(recent)
            if remap is not None:
                report["remap"] = remap
        ready = self.trainer is not None and len(self.intake.replay) >= self.settings.min_records and read
        steps = self._steps_due() if ready else 0
        if steps:
            report["training"] = self._train(steps)
            report["status"] = "trained"
        if self.trainer is not None and self.intake.unacked:
            self.state.round += 1
            self.intake.commit(self.state, self._save_checkpoint)
        if read or report["status"] != "idle":
            self.control.report_progress(self.progress(report["status"]))
        return report

    def _candidate_due(self) -> bool:
        """Every ``candidate_every_rounds`` rounds, if the draft trained since the last candidate."""
        every = self.settings.candidate_every_rounds
        return bool(self._round_losses) and self.state.round + 1 - self._last_judged_round >= every

    def _enough_to_judge(self, read: int) -> bool:
        """Enough fresh traces on probation, or waited long enough for them, or traffic has stopped."""
        waiting = len(self.intake.probation)
        if waiting >= self.settings.judge_fresh_traces or not read:
            return True
        return self._held_rounds >= self.settings.candidate_every_rounds

    def progress(self, status: str) -> TrainerProgress:
        """The counters an operator (or a benchmark waiting on the trainer) reads after a round."""
        sources = self._examples.sources
        state = self.state
        return TrainerProgress(
            trainer=self.consumer.name,
            round=state.round,
            status=status,
            optimizer_steps=state.optimizer_steps,
            trained_records=state.trained_records,
            heldout_records=state.heldout_records,
            trained_rows=state.trained_rows,
            acked_records=state.acked_records,
            holding_records=self.intake.holding,
            last_candidate=state.last_candidate,
            last_candidate_round=state.last_candidate_round,
            examples_from_features=sources.from_features,
            examples_by_prefill=sources.by_prefill,
            examples_revocabulary=sources.revocabulary,
            cpu_seconds=time.process_time(),
            rss_bytes=1024 * (rss_kib() or 0),
        )

    def _remap(self, recent: list[list[int]]) -> RemapReport | None:
        """Cold vocabulary rows to the missing tokens of the outputs read since the last decision, when
        coverage is low; decided once ``remap_min_tokens`` have gathered (one trace is noise)."""
        assert self.trainer is not None
        s = self.settings
        if not s.remap_max_rows:
            return None
        self._remap_pending += recent
        if sum(map(len, self._remap_pending)) < s.remap_min_tokens:
            return None
        outputs, self._remap_pending = self._remap_pending, []
        vocab = self.trainer.draft.vocab
        if vocab.coverage([t for output in outputs for t in output]) >= s.remap_below_coverage:
            return None
        usage: Counter[int] = Counter()
        for record in self.intake.replay.records():
            usage.update(record.output_ids)
        plan = plan_remap(vocab, outputs, usage, s.remap_max_rows)
        if not plan.rows:
            return None
        self.trainer.remap(plan, self.target)
        self.state.vocab_version += 1
        self.state.rows_remapped += len(plan.rows)
        log.info(
            "draft vocabulary v%d: %d rows remapped, round coverage %.3f -> %.3f",
            self.state.vocab_version,
            len(plan.rows),
            plan.coverage_before,
            plan.coverage_after,
        )
        return {
            "vocab_version": self.state.vocab_version,
            "rows": len(plan.rows),
            "coverage_before": round(plan.coverage_before, 4),
            "coverage_after": round(plan.coverage_after, 4),
        }

    def _steps_due(self) -> int:
        """Optimizer steps for this round: fixed, or ``steps_per_trace`` per newly trained trace."""
        per_trace = self.settings.steps_per_trace
        if per_trace <= 0:
            return self.settings.steps_per_round
        self._step_credit += per_trace * self.intake.take_fresh()
        steps = int(self._step_credit)
        self._step_credit -= steps
        return steps

    def _train(self, steps: int) -> TrainingReport:
        assert self.trainer is not None
        boosted = self.state.boost_rounds_left > 0
        self.trainer.lr_scale = self.settings.shift_lr_boost if boosted else 1.0
        self.state.boost_rounds_left = max(0, self.state.boost_rounds_left - 1)
        replay, budget = self.intake.replay, self.settings.batch_tokens
        mean_len = max(1, replay.tokens // max(1, len(replay)))
        per_step = max(1, budget // mean_len)
        losses, top1 = [], []
        for step in range(steps):
            if step and self.control.learning_state()[0]:
                break  # paused mid-round: stop using the CPU now; what was read is still checkpointed
            records = [r for r in replay.sample(per_step) if record_tokens(r) <= budget] or replay.sample(1)
            metrics = self.pacer.paced(self._train_step, records)
            self.state.trained_rows += metrics.tokens
            losses.append(metrics.loss)
            top1.append(metrics.top1[0])
        self.state.optimizer_steps = self.trainer.steps_done
        loss, accuracy = sum(losses) / len(losses), sum(top1) / len(top1)
        self._round_losses.append((loss, accuracy))
        return {"loss": loss, "top1": accuracy, "lr_boost": boosted, "steps": len(losses)}

    def _train_step(self, records: list[TraceRecord]) -> StepMetrics:
        assert self.trainer is not None
        return self.trainer.train_step([self._example(r) for r in records])

    def _example(self, record: TraceRecord) -> Example:
        """Target features are recomputed (one prefill) and kept while the cache's token budget allows."""
        assert self.trainer is not None
        return self._examples.get(record, self.trainer.draft.vocab)

    def _save_checkpoint(self) -> None:
        assert self.trainer is not None
        save_checkpoint(
            self.root / "checkpoints",
            self.state,
            self.trainer.snapshot(),
            self.trainer.optimizer,
            self.intake.replay.records(),
            self.intake.heldout.records(),
            self.intake.probation,
        )

    # -- candidates -----------------------------------------------------------------------------

    def candidate(self, live: str | None) -> CandidateReport:
        """The draft as it stands, judged against ``live`` on the traces it has not trained on (on
        probation and held out) and published."""
        assert self.trainer is not None
        if not self.intake.heldout and not self.intake.probation:
            return {"published": False, "reason": "no traces to judge on yet"}
        shadow = self.candidates.shadow_eval(self.trainer, live, self.intake.probation)
        state = self.state
        metrics: dict[str, Any] = {
            "round": state.round,
            "optimizer_steps": state.optimizer_steps,
            "trained_records": state.trained_records,
            "replay_domains": self.intake.replay.domain_counts(),
            "vocab_coverage": self.candidates.coverage(self.trainer.draft.vocab),
            "vocab_version": state.vocab_version,
            "rows_remapped": state.rows_remapped,
            "rejected_weight": self.settings.rejected_weight,
            "weight_average": self.settings.weight_average,
            **{f"examples_{source}": n for source, n in self._examples.sources.counts().items()},
        }
        if self._round_losses:
            metrics["loss"] = sum(loss for loss, _ in self._round_losses) / len(self._round_losses)
            metrics["top1"] = sum(top1 for _, top1 in self._round_losses) / len(self._round_losses)
        window = {"from": state.window_start, "to": state.window_end}
        name = f"round-{state.round:08d}"
        try:
            result = self.candidates.publish(
                self.trainer.candidate(), name, live, shadow, metrics, window, state.vocab_version
            )
        except (ControlPlaneError, OSError) as exc:
            log.warning("candidate from round %d not published: %s", state.round, exc)
            return {"published": False, "reason": str(exc), "shadow_eval": shadow}
        state.last_candidate = result.version
        state.last_candidate_round = state.round
        self._round_losses = []
        state.window_start = state.window_end = None
        return {"published": True, "shadow_eval": shadow, "version": result.version, "status": result.status}


def build_trainer(settings: Settings, control: ControlPlane) -> OnlineTrainer:
    from borealis.tracebus import TraceBusConfig

    torch.set_num_threads(settings.resolved_trainer_threads)
    # oneDNN's blocked products: the trainer's target multiplies whole traces (64-600 rows), where they
    # ran 6-34 % faster than the engine's row-wise kernel, which serving's few-row steps are for
    with native.switched(False):
        target = LlamaModel.load(settings.resolved_model_path)
    bus = TraceBusConfig.from_settings(settings)
    consumer = TraceConsumer(bus, consumer_name(settings))
    features = feature_reader(bus, 4 * target.spec.hidden_size) if bus.record_features else None
    return OnlineTrainer(settings.trainer, target, consumer, control, features)


def seconds_until_next(report: RoundReport, settings: Settings) -> float:
    return 0.0 if report.get("status") == "trained" else settings.trainer_idle_seconds
